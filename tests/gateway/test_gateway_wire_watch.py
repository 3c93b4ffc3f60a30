"""The gateway is robust where no source settles the media protocol, and records what it saw.

docs/protocol-assumptions.md: the media token may arrive flattened or nested under
`customData` with any key case; a refusal names the keys received (never their values);
pings can be switched off; and, while preflight has armed the gateways, each ended call's
wire observation is appended to the preflight stream.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from callbridge.services.media_gateway.server import Gateway
from callbridge.shared import redis_keys
from callbridge.shared.wire_observations import WireObservation
from callbridge.simulators.openai_realtime import RealtimeSimulator
from tests.gateway.fixtures import (
    GatewayFactory,
    issue_token,
    new_call_id,
    wait_redis,
)
from tests.waiting import wait_until

RATE = 16000
FRAME = bytes(RATE // 50 * 2)  # 20 ms of silence


def _connected(custom: dict[str, str], nested: bool) -> str:
    message: dict[str, Any] = {"event": "websocket:connected",
                               "content-type": f"audio/l16;rate={RATE}"}
    if nested:
        message["customData"] = custom
    else:
        message.update(custom)
    return orjson.dumps(message).decode()


async def _session(gw: Gateway, call_id: str) -> Any:
    return await wait_until(
        lambda: next((s for s in gw.sessions if s.call_id == call_id and s.started),
                     None), timeout=15, what="the admitted session")


async def _admitted_call(gw: Gateway, redis_client: aioredis.Redis, *, nested: bool,
                         upper: bool = False) -> tuple[ClientConnection, str]:
    call_id = new_call_id()
    token = await issue_token(redis_client, call_id)
    keys = ("CBTOKEN", "CBCALLID") if upper else ("cbToken", "cbCallId")
    ws = await connect(gw.url, compression=None)
    await ws.send(_connected({keys[0]: token, keys[1]: call_id}, nested))
    return ws, call_id


@pytest.mark.parametrize(("nested", "upper"), [(True, False), (True, True), (False, True)])
async def test_token_is_found_nested_or_flat_in_any_case(
        nested: bool, upper: bool, make_gateway: GatewayFactory,
        redis_client: aioredis.Redis, rt_sim: RealtimeSimulator) -> None:
    gw = await make_gateway()
    ws, call_id = await _admitted_call(gw, redis_client, nested=nested, upper=upper)
    async with ws:
        session = await _session(gw, call_id)
        assert session.wire.obs.connected.token_location == ("customData" if nested else "top")
        await rt_sim.wait_for_sessions(1)


async def test_refusal_logs_key_names_never_values(
        make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture) -> None:
    gw = await make_gateway()
    secret_value = "s3cr3t-value-never-logged"
    caplog.set_level(logging.INFO)
    async with connect(gw.url, compression=None) as ws:
        await ws.send(orjson.dumps({
            "event": "websocket:connected", "content-type": f"audio/l16;rate={RATE}",
            "customData": {"mediaToken": secret_value, "callRef": secret_value},
            "X-Other": secret_value}).decode())
        await ws.wait_closed()
    assert ws.close_code == 1008 and ws.close_reason == "missing media token"
    text = caplog.text
    assert "keys received: event, content-type, X-Other, customData{mediaToken, callRef}" \
        in text
    assert secret_value not in text


async def _observations(redis_client: aioredis.Redis) -> list[WireObservation]:
    entries = await redis_client.xrange(redis_keys.WIRE_OBSERVATIONS_STREAM)
    return [WireObservation.from_stream_fields(fields) for _, fields in entries]


async def test_armed_gateway_publishes_what_the_wire_showed(
        make_gateway: GatewayFactory, redis_client: aioredis.Redis) -> None:
    await redis_client.delete(redis_keys.WIRE_OBSERVATIONS_STREAM)
    await redis_client.set(redis_keys.PREFLIGHT_ARMED, "{}", ex=60)
    gw = await make_gateway(gateway_keepalive_interval_s=0.1, gateway_keepalive_timeout_s=5)
    ws, call_id = await _admitted_call(gw, redis_client, nested=True)
    async with ws:
        session = await _session(gw, call_id)
        for _ in range(5):
            await ws.send(FRAME)
        await ws.send(orjson.dumps({"event": "websocket:dtmf", "digit": "5"}).decode())
        await ws.send(orjson.dumps({"action": "cleared"}).decode())
        await wait_until(lambda: session.wire.obs.keepalive.pongs_received >= 1
                         and session.wire.obs.inbound.frames >= 5, timeout=15,
                         what="a pong answered and the frames relayed")
    found = await wait_redis(lambda: _observations(redis_client), lambda obs: bool(obs),
                             timeout=15, what="the published observation")
    obs = found[0]
    assert obs.call_id == call_id and obs.end_reason == "caller_hangup"
    assert obs.connected.keys == ["event", "content-type", "customData"]
    assert obs.connected.custom_data_keys == ["cbToken", "cbCallId"]
    assert obs.connected.token_location == "customData"
    assert obs.inbound.frames == 5 and obs.inbound.frame_sizes == {str(len(FRAME)): 5}
    assert obs.keepalive.pings_sent >= obs.keepalive.pongs_received >= 1
    assert obs.control_events == {"websocket:dtmf": 1, "action:cleared": 1}
    assert "s3cr" not in obs.model_dump_json()


async def test_unarmed_gateway_publishes_nothing_and_pings_can_be_off(
        make_gateway: GatewayFactory, redis_client: aioredis.Redis) -> None:
    await redis_client.delete(redis_keys.WIRE_OBSERVATIONS_STREAM,
                              redis_keys.PREFLIGHT_ARMED)
    gw = await make_gateway(gateway_keepalive_interval_s=0)
    ws, call_id = await _admitted_call(gw, redis_client, nested=False)
    async with ws:
        session = await _session(gw, call_id)
        await ws.send(FRAME)
        await wait_until(lambda: session.wire.obs.inbound.frames == 1, timeout=15,
                         what="the frame relayed")
    await wait_until(lambda: not gw.sessions, timeout=15, what="the session ended")
    assert session.wire.obs.keepalive.pings_sent == 0
    # the ended call's observation went through the store's flush: nothing was appended
    await wait_until(lambda: not gw.store._observations, timeout=15, what="the flush")
    assert await redis_client.xlen(redis_keys.WIRE_OBSERVATIONS_STREAM) == 0
