"""The floor: the minimal Python relay of the gateway's reference measurement,
run under the same load as the gateway to measure what this machine charges for the
relaying alone.

    python -m bench.gateway --relay floor --levels 100,150 --seconds 10

The reference measurement put this relay at 0.26 % of a core per call (100 calls) on the
machine where the gateway's target (>= 250 calls per core) was set. Measured here under
the same legs and simulator, the ratio gateway/floor says how far the gateway is from the
cheapest Python relay, independent of the machine.

What it does, and nothing more (the reference's row "minimal Python relay, websockets
both sides, orjson, no pacing"): accept Infobip's media WebSocket, read `websocket:connected`,
open one Realtime socket per call (GA: `Authorization: Bearer`, `?model=`; the simulator's
defaults give server VAD and 24 kHz PCM, so no `session.update`), ask for a greeting, send
each caller frame as `input_audio_buffer.append`, and write the model's audio deltas to the
caller in 20 ms frames as they arrive (no pacing, no silence, no barge-in, no state, no
token check). It answers /healthz and an empty /metrics so run.py can drive it unchanged.
Not a product: never deploy it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from contextlib import AbstractAsyncContextManager
from http import HTTPStatus

import orjson
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from callbridge.shared import event_loop
from callbridge.shared.infobip_media import frame_bytes
from callbridge.shared.realtime_events import MODEL_RATE

FRAME = frame_bytes(MODEL_RATE)  # 20 ms at the model's rate, the only one the floor relays
_DELTA = b'"response.output_audio.delta"'
_GREETING = orjson.dumps({"type": "response.create"})


def _http(conn: ServerConnection, request: Request) -> Response | None:
    """The readiness and metrics paths run.py polls; None lets WebSocket upgrades through."""
    if request.path in ("/healthz", "/readyz", "/metrics"):
        return Response(HTTPStatus.OK, "OK", Headers({"Content-Type": "text/plain"}), b"")
    return None


async def _relay(caller: ServerConnection, model_url: str, api_key: str) -> None:
    await caller.recv()  # websocket:connected (the floor trusts it)
    async with connect(f"{model_url}?model=gpt-realtime", compression=None, max_size=2**24,
                       additional_headers={"Authorization": f"Bearer {api_key}"}) as model:
        await model.send(_GREETING, text=True)  # orjson gives bytes; Realtime takes text only

        async def up() -> None:
            async for message in caller:
                if isinstance(message, bytes):
                    await model.send(b'{"type":"input_audio_buffer.append","audio":"'
                                     + base64.b64encode(message) + b'"}', text=True)

        async def down() -> None:
            while True:  # ends with ConnectionClosed; bytes, not str: no UTF-8 decode per event
                raw = await model.recv(decode=False)
                if _DELTA in raw[:80]:
                    pcm = base64.b64decode(orjson.loads(raw)["delta"])
                    for i in range(0, len(pcm), FRAME):
                        await caller.send(pcm[i:i + FRAME])

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def serve_floor(host: str, port: int, model_url: str,
                api_key: str) -> AbstractAsyncContextManager[Server]:
    """The floor's server (an async context manager, like websockets' `serve`)."""
    async def handler(caller: ServerConnection) -> None:
        with contextlib.suppress(Exception):  # a leg or model socket closing ends the call
            await _relay(caller, model_url, api_key)

    return serve(handler, host, port, process_request=_http, compression=None, max_size=2**20)


async def main() -> None:
    """Configured like the gateway by run.py's environment."""
    async with serve_floor(os.environ.get("GATEWAY_HOST", "127.0.0.1"),
                           int(os.environ["GATEWAY_PORT"]), os.environ["OPENAI_REALTIME_URL"],
                           os.environ["OPENAI_API_KEY"]):
        await asyncio.get_running_loop().create_future()  # until SIGTERM


if __name__ == "__main__":
    event_loop.run(main())  # uvloop, like the gateway: the comparison stays like for like
