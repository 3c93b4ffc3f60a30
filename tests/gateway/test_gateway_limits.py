"""Limits and lifecycle: idle timeout, maximum duration, session cap, drain (method and
SIGTERM), keep-alive on a half-open peer, oversized and malformed messages, health."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from callbridge.shared import redis_keys
from callbridge.shared.infobip_media import build_connected
from callbridge.shared.jobs import HANGUP_CALL, job_id
from callbridge.shared.pcm import is_silent
from callbridge.shared.redis_server import free_port
from callbridge.simulators.infobip import MediaLeg
from callbridge.simulators.openai_realtime import RealtimeSimulator
from tests.gateway.fixtures import (
    GatewayFactory,
    LegFactory,
    issue_token,
    new_call_id,
    wait_redis,
)
from tests.waiting import wait_until


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def get(port: int, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(http_get, port, path)


async def record(redis: aioredis.Redis, call_id: str, state: bytes = b"ended"
                 ) -> dict[bytes, bytes]:
    return dict(await wait_redis(lambda: redis.hgetall(redis_keys.session_record(call_id)),
                                 lambda r: r.get(b"state") == state, timeout=20,
                                 what=f"session {state!r}"))


async def test_health_readiness_and_metrics(make_gateway: GatewayFactory,
                                            open_leg: LegFactory) -> None:
    gw = await make_gateway()
    assert await get(gw.port, "/healthz") == (200, '{"status":"ok"}')
    assert await get(gw.port, "/readyz") == (200, '{"ready":true}')
    leg = await open_leg(gw, 24000)
    assert await leg.wait_agent_audio(timeout=15)
    status, body = await get(gw.port, "/metrics")
    assert status == 200
    for name in ("callbridge_gateway_active_sessions", "callbridge_gateway_relay_latency_seconds",
                 "callbridge_gateway_first_audio_seconds_count", "callbridge_gateway_barge_ins"):
        assert name in body
    await leg.hangup()


async def test_idle_peer_is_ended(make_gateway: GatewayFactory, redis_client: aioredis.Redis,
                                  rt_sim: RealtimeSimulator) -> None:
    """Connected, then not a single audio frame: the call ends and is hung up."""
    gw = await make_gateway(gateway_idle_timeout_s=1.0)
    call_id = new_call_id()
    token = await issue_token(redis_client, call_id)
    async with connect(gw.url, compression=None) as ws:
        await ws.send(build_connected(16000, {"cbToken": token, "cbCallId": call_id}))
        async with asyncio.timeout(15):
            async for _ in ws:  # frames from the gateway until it closes
                pass
    assert ws.close_code == 1000
    assert (await record(redis_client, call_id))[b"end_reason"] == b"idle_timeout"
    assert await redis_client.exists(f"arq:job:{job_id(HANGUP_CALL, call_id)}")
    session = rt_sim.sessions[0]
    await session.wait_closed(10)  # its model socket was freed too


async def test_half_open_peer_ends_on_keepalive(make_gateway: GatewayFactory,
                                                redis_client: aioredis.Redis,
                                                rt_sim: RealtimeSimulator) -> None:
    """A peer that stops reading (no pongs) is dropped within interval + timeout, and the
    call is hung up (the half-open peer may still hold the caller's call at Infobip)."""
    gw = await make_gateway(gateway_keepalive_interval_s=0.5, gateway_keepalive_timeout_s=0.5,
                            gateway_idle_timeout_s=60)
    call_id = new_call_id()
    token = await issue_token(redis_client, call_id)
    ws = await connect(gw.url, compression=None)
    await ws.send(build_connected(8000, {"cbToken": token, "cbCallId": call_id}))
    await rt_sim.wait_for_sessions(1)
    ws.transport.pause_reading()  # half-open: we neither read nor answer pings
    try:
        rec = await record(redis_client, call_id)
        assert rec[b"end_reason"] == b"keepalive_timeout"
        await wait_until(lambda: redis_client.exists(
            f"arq:job:{job_id(HANGUP_CALL, call_id)}"), what="the hang-up job")
        await rt_sim.sessions[0].wait_closed(10)
    finally:
        ws.transport.abort()


async def test_max_call_duration_plays_a_notice_then_hangs_up(
        make_gateway: GatewayFactory, open_leg: LegFactory, redis_client: aioredis.Redis) -> None:
    gw = await make_gateway(gateway_max_call_duration_s=2.0, gateway_tool_end_grace_s=1.0)
    leg = await open_leg(gw, 16000)
    call_id = leg.custom_data["cbCallId"]
    assert await leg.wait_closed(30)
    notice = [f for t, f in leg.frames
              if t > leg.marks["media_connected"] + 2.0 and not is_silent(f)]
    assert len(notice) * 20 >= 2000, "the spoken notice was not played"
    assert await redis_client.exists(f"arq:job:{job_id(HANGUP_CALL, call_id)}")
    assert (await record(redis_client, call_id))[b"end_reason"] == b"max_duration"


async def test_session_cap_refuses_cleanly(make_gateway: GatewayFactory,
                                           open_leg: LegFactory) -> None:
    gw = await make_gateway(gateway_max_sessions=2)
    legs = [await open_leg(gw, 8000) for _ in range(2)]
    await wait_until(lambda: len(gw.sessions) == 2, what="two sessions")
    assert (await get(gw.port, "/readyz"))[0] == 503
    with pytest.raises(InvalidStatus) as refused:
        await open_leg(gw, 8000)
    assert refused.value.response.status_code == 503
    assert all(not leg.closed for leg in legs)
    await legs[0].hangup()
    await wait_until(lambda: len(gw.sessions) == 1, what="a free slot")
    assert (await get(gw.port, "/readyz"))[0] == 200
    third = await open_leg(gw, 8000)
    assert await third.wait_agent_audio(timeout=15)


async def test_drain_lets_live_calls_finish(make_gateway: GatewayFactory, open_leg: LegFactory,
                                            redis_client: aioredis.Redis) -> None:
    gw = await make_gateway()
    leg = await open_leg(gw, 24000)
    assert await leg.wait_agent_audio(timeout=15)
    drain = asyncio.create_task(gw.drain(timeout=30))
    await wait_until(lambda: gw.draining, what="draining")
    assert (await get(gw.port, "/readyz")) == (503, '{"ready":false,"reason":"draining"}')
    with pytest.raises(InvalidStatus):
        await open_leg(gw, 24000)
    frames_before = len(leg.frames)
    await wait_until(lambda: len(leg.frames) > frames_before + 25, what="the call goes on")
    assert not drain.done() and not leg.closed
    await leg.hangup()
    assert await asyncio.wait_for(drain, 10) is True
    call_id = leg.custom_data["cbCallId"]
    assert (await record(redis_client, call_id))[b"end_reason"] == b"caller_hangup"


async def test_drain_timeout_ends_remaining_calls(make_gateway: GatewayFactory,
                                                  open_leg: LegFactory,
                                                  redis_client: aioredis.Redis) -> None:
    gw = await make_gateway()
    leg = await open_leg(gw, 16000)
    assert await leg.wait_agent_audio(timeout=15)
    assert await gw.drain(timeout=0.5) is False
    assert await leg.wait_closed(10) and leg.close_code == 1001
    call_id = leg.custom_data["cbCallId"]
    assert (await record(redis_client, call_id))[b"end_reason"] == b"drain_timeout"
    assert await redis_client.exists(f"arq:job:{job_id(HANGUP_CALL, call_id)}")


async def test_sigterm_drains_the_process(redis_url: str, redis_client: aioredis.Redis,
                                          rt_sim: RealtimeSimulator, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "OPENAI_API_KEY": "sk-sim",
           "OPENAI_REALTIME_URL": rt_sim.url, "GATEWAY_PORT": str(port),
           "GATEWAY_HOST": "127.0.0.1", "GATEWAY_DRAIN_TIMEOUT_S": "30", "LOG_FORMAT": "text"}
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callbridge.services.cli", "gateway", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=log_file)
    try:
        for _ in range(200):  # bounded: 20 s for the process to listen
            try:
                if (await get(port, "/healthz"))[0] == 200:
                    break
            except OSError:
                pass
            assert proc.returncode is None, log_path.read_text()
            await asyncio.sleep(0.1)
        call_id = new_call_id()
        token = await issue_token(redis_client, call_id)
        leg = MediaLeg(f"ws://127.0.0.1:{port}/media", 16000,
                       {"cbToken": token, "cbCallId": call_id})
        await leg.connect()
        assert await leg.wait_agent_audio(timeout=15)
        proc.send_signal(signal.SIGTERM)
        for _ in range(100):  # bounded: readiness flips within 10 s
            if (await get(port, "/readyz"))[0] == 503:
                break
            await asyncio.sleep(0.1)
        assert (await get(port, "/readyz")) == (503, '{"ready":false,"reason":"draining"}')
        frames_before = len(leg.frames)
        await wait_until(lambda: len(leg.frames) > frames_before + 25, what="call goes on")
        assert proc.returncode is None and not leg.closed
        await leg.hangup()
        assert await asyncio.wait_for(proc.wait(), 20) == 0, log_path.read_text()
        assert (await record(redis_client, call_id))[b"end_reason"] == b"caller_hangup"
        await leg.aclose()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_oversized_message_closes_with_1009(make_gateway: GatewayFactory,
                                                  open_leg: LegFactory) -> None:
    gw = await make_gateway(gateway_max_message_bytes=4096)
    leg = await open_leg(gw, 24000)
    await wait_until(lambda: leg.frames, what="frames flowing")
    await leg.send_binary(bytes(8192))
    assert await leg.wait_closed(10)
    assert leg.close_code == 1009


async def test_malformed_input_never_crashes_a_session(
        make_gateway: GatewayFactory, open_leg: LegFactory, rt_sim: RealtimeSimulator) -> None:
    gw = await make_gateway()
    leg = await open_leg(gw, 16000, autoplay=False)
    session = (await rt_sim.wait_for_sessions(1))[0]
    for junk in (b"", b"\x01", bytes(641), bytes(3)):
        await leg.send_binary(junk)
    for text in ("{not json", "[]", '{"event": "websocket:dtmf"}', '{"event": "mystery"}',
                 build_connected(16000, {})):
        await leg.send_text(text)
    await leg.send_dtmf("7")
    item = await session.wait_for("conversation.item.create", timeout=10, direction="received")
    assert "pressed 7" in item["item"]["content"][0]["text"]
    assert await leg.wait_agent_audio(timeout=15)
    assert not leg.closed
    started = time.time()
    await leg.hangup()
    assert time.time() - started < 10
