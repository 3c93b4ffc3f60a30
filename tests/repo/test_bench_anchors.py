"""The benchmarks' Node anchors really do their job on the wire: a ratio against an anchor
means something only if the anchor relays (or answers) as designed. No timings here.

Skipped when node/npm are missing or the locked packages cannot be installed
(bench/anchors/node.py says why)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from bench.anchors.node import NodeUnavailable, node_command
from callbridge.shared.infobip_media import CLEAR_MESSAGE, build_connected
from callbridge.shared.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
FRAME = 960  # 20 ms at 24 kHz


def _node(script: str) -> tuple[list[str], dict[str, str]]:
    try:
        return node_command(script)
    except NodeUnavailable as exc:
        pytest.skip(str(exc))


async def _wait_listening(port: int, proc: asyncio.subprocess.Process) -> None:
    for _ in range(200):  # bounded: 10 s
        assert proc.returncode is None, f"node exited with {proc.returncode}"
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"node did not listen on {port}")


@contextlib.asynccontextmanager
async def _running(command: list[str], env: dict[str, str], port: int) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(*command, cwd=ROOT, env={**os.environ, **env},
                                                stdout=asyncio.subprocess.DEVNULL)
    try:
        await _wait_listening(port, proc)
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_node_relay_relays_an_append_a_delta_and_a_clear() -> None:
    command, env = _node("node_relay.js")
    pcm_up = bytes(range(256)) * 3 + bytes(192)  # one 960-byte caller frame
    pcm_down = bytes(range(1, 256)) * 8  # 2040 bytes: two whole frames and a rest
    received: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    requests: list[tuple[str, str | None]] = []

    async def model(ws: ServerConnection) -> None:
        """A fake Realtime server: records what it gets; after the first append it sends
        one audio delta and a speech_started."""
        assert ws.request is not None
        requests.append((ws.request.path, ws.request.headers.get("Authorization")))
        async for message in ws:
            event = orjson.loads(message)
            await received.put(event)
            if event["type"] == "input_audio_buffer.append":
                await ws.send(orjson.dumps({
                    "type": "response.output_audio.delta", "response_id": "resp_1",
                    "item_id": "item_1", "output_index": 0, "content_index": 0,
                    "delta": base64.b64encode(pcm_down).decode()}).decode())
                await ws.send(orjson.dumps({"type": "input_audio_buffer.speech_started",
                                            "audio_start_ms": 0, "item_id": "item_2"}).decode())

    async with serve(model, "127.0.0.1", 0) as model_server:
        model_port = model_server.sockets[0].getsockname()[1]
        port = free_port()
        env = {**env, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port),
               "OPENAI_REALTIME_URL": f"ws://127.0.0.1:{model_port}/v1/realtime",
               "OPENAI_API_KEY": "sk-anchor"}
        async with _running(command, env, port):
            async with aiohttp.ClientSession() as http, \
                    http.get(f"http://127.0.0.1:{port}/healthz") as health:
                assert health.status == 200  # run.py's readiness poll
            async with connect(f"ws://127.0.0.1:{port}/media") as caller:
                await caller.send(build_connected(24000, {"cbToken": "t"}))
                greeting = await asyncio.wait_for(received.get(), 10)
                assert greeting == {"type": "response.create"}
                await caller.send(pcm_up)  # may race the model socket's open: resend
                append = None
                for _ in range(50):  # bounded
                    with contextlib.suppress(TimeoutError):
                        append = await asyncio.wait_for(received.get(), 0.2)
                        break
                    await caller.send(pcm_up)
                assert append == {"type": "input_audio_buffer.append",
                                  "audio": base64.b64encode(pcm_up).decode()}
                got = [await asyncio.wait_for(caller.recv(), 10) for _ in range(4)]
    assert requests == [("/v1/realtime?model=gpt-realtime", "Bearer sk-anchor")]
    # The delta in 20 ms frames, in order, then the clear as a text message.
    assert got[:3] == [pcm_down[:FRAME], pcm_down[FRAME:2 * FRAME], pcm_down[2 * FRAME:]]
    assert got[3] == CLEAR_MESSAGE


async def test_express_anchor_answers_200_and_stores_nothing() -> None:
    command, env = _node("express_webhook.js")
    port = free_port()
    async with _running([*command, "--port", str(port)], env, port):
        body = b'{"type":"CALL_RECEIVED","callId":"c-1","properties":{}}'
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{port}/webhook", data=body,
                headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Length"] == "0"  # bench/ingress's generator needs it


async def test_tutorial_path_creates_the_dialog_from_the_webhook() -> None:
    """bench/orchestrator's anchor: CALL_RECEIVED -> one POST /calls/1/dialogs naming the
    parent call and the WEBSOCKET config, and the webhook's read instant on /received."""
    from aiohttp import web

    from bench.orchestrator.tutorial import Tutorial
    from callbridge.simulators.infobip import CallScript, InfobipSimulator

    port = free_port()
    sim = InfobipSimulator(webhook_url=f"http://127.0.0.1:{port}/webhook")
    await sim.start()
    cfg = sim.add_media_stream_config(url="ws://127.0.0.1:9/media", sample_rate=24000)
    runner = web.AppRunner(Tutorial(sim.base_url, sim.api_key, cfg).app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        call = await sim.place_call(CallScript(caller_wav=None, connect_to_media=False,
                                               hangup_after_s=0.5))
        for _ in range(100):  # bounded: 10 s
            if call.dialog is not None:
                break
            await asyncio.sleep(0.1)
        assert call.dialog is not None, "no dialog"
        (request,) = sim.dialog_requests
        assert request.json == {"parentCallId": call.call_id, "childCallRequest": {
            "endpoint": {"type": "WEBSOCKET", "websocketEndpointConfigId": cfg}}}
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{port}/received") as resp:
            stamps = await resp.json()
        assert set(stamps["received"]) == {call.call_id}
        assert stamps["failed"] == 0
        await call.wait_finished(10)
    finally:
        await runner.cleanup()
        await sim.stop()
