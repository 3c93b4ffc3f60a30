"""The anchor of bench/orchestrator: the tutorial's in-process path, in Python (aiohttp).

Infobip's OpenAI tutorial creates the dialog from inside the webhook handler: the handler
that receives `CALL_RECEIVED` POSTs `/calls/1/dialogs` itself (parent call + WEBSOCKET
endpoint, https://www.infobip.com/docs/api/channels/voice/calls/dialog-calls/create-dialog)
and answers 200 - no queue, no durable store, no job, no idempotency. Ours stores the webhook
in a Redis stream first and an orchestrator job posts the dialog; this anchor measures what
that durability costs in latency, against the same simulated Calls API in the same run.

Why Python aiohttp and not the tutorial's Node (Express + axios): the ratio should price the
architecture, not the runtime. The orchestrator posts with an aiohttp client session on
uvloop; this anchor does the same (one keep-alive session, orjson, uvloop), so what the ratio
shows is our path's extra hops (Redis stream, consumer, job claim, reads before the POST).

    python -m bench.orchestrator.tutorial --port P --api-base URL --api-key K --config-id C

Only 127.0.0.1 is bound. `GET /received` returns {callId: unix seconds the webhook body was
read} for every CALL_RECEIVED, so run.py measures from the same instant it measures ours
from. Answers every other event with 200 and forgets it (the tutorial subscribes to
CALL_RECEIVED only). Never deploy it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from callbridge.shared import event_loop

DIALOGS_PATH = "/calls/1/dialogs"


class Tutorial:
    """The webhook handler that creates the dialog itself."""

    def __init__(self, api_base: str, api_key: str, config_id: str) -> None:
        self.url = api_base.rstrip("/") + DIALOGS_PATH
        self.headers = {"Authorization": f"App {api_key}", "Content-Type": "application/json"}
        self.config_id = config_id
        self.received: dict[str, float] = {}
        self.failed = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        at = time.time()
        try:
            event: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            return web.Response(status=400)
        if isinstance(event, dict) and event.get("type") == "CALL_RECEIVED":
            call_id = str(event.get("callId"))
            self.received.setdefault(call_id, at)
            # As the tutorial: the POST is started, not awaited, and the webhook answered.
            task = asyncio.create_task(self.create_dialog(call_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.Response(status=200)

    async def create_dialog(self, call_id: str) -> None:
        assert self._session is not None
        payload = orjson.dumps({"parentCallId": call_id, "childCallRequest": {"endpoint": {
            "type": "WEBSOCKET", "websocketEndpointConfigId": self.config_id}}})
        try:
            async with self._session.post(self.url, data=payload, headers=self.headers) as r:
                await r.read()
                if r.status != 201:
                    self.failed += 1
        except aiohttp.ClientError:
            self.failed += 1

    async def received_at(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({"received": self.received,
                                               "failed": self.failed}),
                            content_type="application/json")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/webhook", self.webhook)
        app.router.add_get("/received", self.received_at)
        app.router.add_get("/healthz", lambda _: self._ok())
        app.cleanup_ctx.append(self._client)
        return app

    async def _ok(self) -> web.Response:
        return web.Response(text="ok")

    async def _client(self, app: web.Application) -> Any:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100),
            timeout=aiohttp.ClientTimeout(total=10))
        yield
        await self._session.close()


async def serve(args: argparse.Namespace) -> None:
    runner = web.AppRunner(Tutorial(args.api_base, args.api_key, args.config_id).app(),
                           access_log=None, handle_signals=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    print(f"READY {args.port}", flush=True)
    await asyncio.get_running_loop().create_future()  # until SIGTERM (aiohttp's handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-base", required=True, help="the (simulated) Calls API")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--config-id", required=True, help="media-stream config id")
    args = parser.parse_args(argv)
    try:
        event_loop.run(serve(args))
    except (KeyboardInterrupt, web.GracefulExit):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
