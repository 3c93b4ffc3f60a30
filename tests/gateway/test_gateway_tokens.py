"""The one-time media token (services/media_gateway/admission.py): anything but a fresh token
for this call closes the socket with 1008 and a reason, and nothing reaches the model."""

from __future__ import annotations

import asyncio
import time

import orjson
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from callbridge.shared import redis_keys
from callbridge.shared.infobip_media import build_connected
from callbridge.simulators.openai_realtime import RealtimeSimulator
from tests.gateway.fixtures import (
    GatewayFactory,
    LegFactory,
    issue_token,
    new_call_id,
)


async def _refused(open_leg: LegFactory, gw: object, custom: dict[str, str],
                   rate: int = 24000) -> tuple[int | None, str | None]:
    leg = await open_leg(gw, rate, custom_data=custom)
    assert await leg.wait_closed(10), "the gateway did not close the socket"
    return leg.close_code, leg.close_reason


async def test_missing_token(make_gateway: GatewayFactory, open_leg: LegFactory,
                             rt_sim: RealtimeSimulator) -> None:
    gw = await make_gateway()
    code, reason = await _refused(open_leg, gw, {"cbCallId": new_call_id()})
    assert (code, reason) == (1008, "missing media token")
    assert rt_sim.sessions == []


async def test_unknown_token(make_gateway: GatewayFactory, open_leg: LegFactory,
                             rt_sim: RealtimeSimulator) -> None:
    gw = await make_gateway()
    code, reason = await _refused(open_leg, gw, {"cbToken": "nope", "cbCallId": "c1"})
    assert (code, reason) == (1008, "unknown or already used media token")
    assert rt_sim.sessions == []


async def test_reused_token(make_gateway: GatewayFactory, open_leg: LegFactory,
                            redis_client: aioredis.Redis, rt_sim: RealtimeSimulator) -> None:
    gw = await make_gateway()
    call_id = new_call_id()
    token = await issue_token(redis_client, call_id)
    custom = {"cbToken": token, "cbCallId": call_id}
    first = await open_leg(gw, 24000, custom_data=custom)
    assert await first.wait_agent_audio(timeout=15)
    code, reason = await _refused(open_leg, gw, custom)
    assert (code, reason) == (1008, "unknown or already used media token")
    assert len(rt_sim.sessions) == 1  # only the first, legitimate leg
    assert await redis_client.exists(redis_keys.media_token(token)) == 0


async def test_expired_token(make_gateway: GatewayFactory, open_leg: LegFactory,
                             redis_client: aioredis.Redis, rt_sim: RealtimeSimulator) -> None:
    gw = await make_gateway()
    call_id = new_call_id()
    token = await issue_token(redis_client, call_id, expires_in=-1.0)  # key alive, stale
    code, reason = await _refused(open_leg, gw, {"cbToken": token, "cbCallId": call_id})
    assert (code, reason) == (1008, "media token expired")
    assert rt_sim.sessions == []


async def test_another_calls_token(make_gateway: GatewayFactory, open_leg: LegFactory,
                                   redis_client: aioredis.Redis,
                                   rt_sim: RealtimeSimulator) -> None:
    gw = await make_gateway()
    token = await issue_token(redis_client, new_call_id())
    code, reason = await _refused(open_leg, gw, {"cbToken": token, "cbCallId": new_call_id()})
    assert (code, reason) == (1008, "media token belongs to another call")
    assert rt_sim.sessions == []


async def test_malformed_token_record(make_gateway: GatewayFactory, open_leg: LegFactory,
                                      redis_client: aioredis.Redis,
                                      rt_sim: RealtimeSimulator) -> None:
    gw = await make_gateway()
    await redis_client.set(redis_keys.media_token("garbled"), b"{not json", ex=60)
    code, _ = await _refused(open_leg, gw, {"cbToken": "garbled", "cbCallId": "c"})
    assert code == 1008
    assert rt_sim.sessions == []


async def test_audio_before_connected_and_bad_rates_are_refused(
        make_gateway: GatewayFactory, redis_client: aioredis.Redis,
        rt_sim: RealtimeSimulator) -> None:
    gw = await make_gateway()
    async with connect(gw.url, compression=None) as ws:
        await ws.send(bytes(960))  # audio first: not the protocol
        async with asyncio.timeout(10):
            await ws.wait_closed()
        assert ws.close_code == 1008
    call_id = new_call_id()
    token = await issue_token(redis_client, call_id)
    async with connect(gw.url, compression=None) as ws:
        await ws.send(build_connected(11025, {"cbToken": token, "cbCallId": call_id}))
        async with asyncio.timeout(10):
            await ws.wait_closed()
        assert ws.close_code == 1003
    async with connect(gw.url, compression=None) as ws:
        await ws.send(orjson.dumps({"event": "websocket:connected",
                                    "content-type": "audio/opus"}).decode())
        async with asyncio.timeout(10):
            await ws.wait_closed()
        assert ws.close_code == 1008
    assert rt_sim.sessions == []


async def test_silent_peer_is_refused_after_the_connect_timeout(
        make_gateway: GatewayFactory, rt_sim: RealtimeSimulator) -> None:
    gw = await make_gateway(gateway_connect_timeout_s=0.5)
    started = time.monotonic()
    async with connect(gw.url, compression=None) as ws:
        async with asyncio.timeout(10):
            await ws.wait_closed()
        assert ws.close_code == 1008
    assert time.monotonic() - started < 5
    assert rt_sim.sessions == []
