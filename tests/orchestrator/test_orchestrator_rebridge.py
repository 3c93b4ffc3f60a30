"""A lost media gateway is a pause, not a hang-up: the orchestrator's half of re-bridging.

The media gateway here is a stand-in (`StandInGateway`): a WebSocket server that spends the
one-time media token as the real gateway does, keeps the socket, writes the session record
and the heartbeat the real one writes, and can die (sockets aborted: what Infobip sees of a
SIGKILL) or freeze (sockets kept, heartbeat stopped: a SIGSTOP). The gateway's own half
(resume, fencing) is tests/gateway/test_gateway_rebridge.py; the real processes through
HAProxy are the fault suite's scenarios 6a/6b.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.server import Server, ServerConnection, serve

from callbridge.services.call_orchestrator import call_record, gateway_watch
from callbridge.services.call_orchestrator.gateway_watch import GatewayWatch
from callbridge.services.call_orchestrator.rebridge import rebridge, request_rebridge
from callbridge.shared import redis_keys
from callbridge.shared.infobip_media import parse_control
from callbridge.shared.media_tokens import MediaTokenRecord
from callbridge.simulators.infobip import CallScript, InfobipSimulator
from tests.orchestrator.fixtures import StreamIngress, dialog_posts, orch_settings, running
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(90)


@dataclass
class Admission:
    call_id: str
    token: MediaTokenRecord
    conn: ServerConnection


@dataclass
class StandInGateway:
    redis: aioredis.Redis
    gateway_id: str
    admitted: list[Admission] = field(default_factory=list)
    beating: bool = True
    server: Server | None = None
    _beat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.server = await serve(self._handle, "127.0.0.1", 0)
        self._beat = asyncio.create_task(self._heartbeat())

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{next(iter(self.server.sockets)).getsockname()[1]}/media"

    async def _handle(self, conn: ServerConnection) -> None:
        connected = parse_control(str(await conn.recv()))
        custom = connected.custom  # type: ignore[union-attr]
        call_id, token = custom("cbCallId"), custom("cbToken")
        raw = await self.redis.getdel(redis_keys.media_token(token))
        record = MediaTokenRecord.from_json(raw) if raw else None
        if record is None:
            await conn.close(1008, "bad token")
            return
        self.admitted.append(Admission(call_id, record, conn))
        await self.redis.hset(redis_keys.session_record(call_id), mapping={
            "gateway_id": self.gateway_id, "state": "streaming",
            "media_gen": record.generation})
        await self.redis.sadd(redis_keys.gateway_sessions(self.gateway_id), call_id)
        with contextlib.suppress(Exception):
            await conn.wait_closed()

    async def _heartbeat(self) -> None:
        seq = 0
        await self.redis.sadd(redis_keys.GATEWAYS, self.gateway_id)
        while True:
            if self.beating:
                seq += 1
                await self.redis.set(redis_keys.gateway_heartbeat(self.gateway_id),
                                     orjson.dumps({"seq": seq}), ex=5)
            await asyncio.sleep(0.05)  # a heartbeat period, as the gateway's own loop

    def crash(self) -> None:
        """What Infobip sees of a SIGKILL: every socket gone at once, nothing written."""
        self.beating = False
        for admission in self.admitted:
            admission.conn.transport.abort()

    def freeze(self) -> None:
        """A SIGSTOP: sockets stay open, the heartbeat stops changing."""
        self.beating = False

    async def stop(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@contextlib.asynccontextmanager
async def platform(redis_url: str, redis_client: aioredis.Redis, **settings: Any
                   ) -> AsyncIterator[tuple[InfobipSimulator, StandInGateway, Any]]:
    ingress = StreamIngress(redis_url)
    await ingress.start()
    gateway = StandInGateway(redis_client, "gw-standin")
    await gateway.start()
    sim = InfobipSimulator(webhook_url=ingress.url)
    await sim.start()
    cfg = sim.add_media_stream_config(url=gateway.url, sample_rate=16000)
    try:
        async with running(orch_settings(redis_url, sim.base_url, cfg, **settings)) as orch:
            yield sim, gateway, orch
    finally:
        await sim.stop()
        await gateway.stop()
        await ingress.stop()


def media_dialogs(sim: InfobipSimulator, call_id: str) -> list[Any]:
    """Every WEBSOCKET dialog requested for the call (refused ones too)."""
    return [r for r in dialog_posts(sim, call_id)
            if r.json["childCallRequest"]["endpoint"]["type"] == "WEBSOCKET"]


async def _record(redis: aioredis.Redis, call_id: str) -> dict[str, str]:
    return await call_record.load(redis, call_id)


async def _admitted(gateway: StandInGateway, n: int) -> None:
    await wait_until(lambda: len(gateway.admitted) >= n, 15, f"{n} media connection(s)")


async def test_a_crashed_gateways_caller_gets_a_new_media_dialog(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    async with platform(redis_url, redis_client) as (sim, gateway, _):
        call = await sim.place_call(CallScript(caller_wav=None, max_duration_s=40))
        await _admitted(gateway, 1)
        first = gateway.admitted[0]
        assert (first.token.generation, first.token.resume) == (0, False)
        t_crash = time.monotonic()
        gateway.crash()
        await _admitted(gateway, 2)
        took = time.monotonic() - t_crash
        second = gateway.admitted[1]
        rec = await _record(redis_client, call.call_id)
        on_the_line = not call.finished
    assert on_the_line, call.end_reason  # the caller never left the call
    assert second.call_id == call.call_id
    assert (second.token.generation, second.token.resume) == (1, True)
    assert second.token.profile == first.token.profile
    assert len(media_dialogs(sim, call.call_id)) == 2
    assert rec["media_gen"] == rec["dialog_gen"] == "1" and rec["rebridges"] == "1"
    assert rec["rebridge_reason"] == "media_leg_lost"
    assert rec["dialog_id"] == call.dialogs[-1].id != rec["fenced_dialog_id"]
    assert took < 5, took  # Infobip's own signal: no heartbeat timeout in the way


async def test_every_repeat_of_the_loss_makes_no_second_new_dialog(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    """Infobip's signal and the heartbeat watch name one job; and the job itself, run again
    past arq's de-duplication (a replay, a second orchestrator), finds the fence moved."""
    async with platform(redis_url, redis_client) as (sim, gateway, orch):
        call = await sim.place_call(CallScript(caller_wav=None, max_duration_s=40))
        await _admitted(gateway, 1)
        gateway.crash()
        await _admitted(gateway, 2)
        assert not await request_rebridge(orch.rt, call.call_id, 0, "gateway_lost")
        again = await rebridge(orch.rt, call.call_id, 0, "gateway_lost", "another-owner")
        older = await rebridge(orch.rt, call.call_id, 0, "media_leg_lost", "a-replay")
        rec = await _record(redis_client, call.call_id)
    assert (again, older) == ("noop", "noop")
    assert len(media_dialogs(sim, call.call_id)) == 2
    assert rec["rebridges"] == "1" and rec["media_gen"] == "1"


async def test_a_frozen_gateway_is_found_by_its_heartbeat_and_its_leg_hung_up(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    async with platform(redis_url, redis_client) as (sim, gateway, _):
        call = await sim.place_call(CallScript(caller_wav=None, max_duration_s=40))
        await _admitted(gateway, 1)
        old_child = call.dialogs[0].child.id
        t_freeze = time.monotonic()
        gateway.freeze()  # the socket stays open: Infobip has nothing to say
        await _admitted(gateway, 2)
        took = time.monotonic() - t_freeze
        rec = await _record(redis_client, call.call_id)
        on_the_line = not call.finished
    hangups = [r for r in sim.requests
               if r.method == "POST" and r.path == f"/calls/1/calls/{old_child}/hangup"]
    assert len(hangups) == 1  # the frozen gateway's leg, so never two live media legs
    assert rec["rebridge_reason"] == "gateway_lost" and rec["fenced_gateway"] == "gw-standin"
    assert on_the_line
    # heartbeat unchanged for 1 s + a check (0.25 s) + the webhook path and the new leg
    assert took < 4, took


async def test_re_bridges_are_bounded_then_the_caller_is_hung_up(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    async with platform(redis_url, redis_client, orchestrator_max_rebridges=1) as (
            sim, gateway, _):
        call = await sim.place_call(CallScript(caller_wav=None, max_duration_s=40))
        await _admitted(gateway, 1)
        gateway.crash()
        await _admitted(gateway, 2)
        gateway.crash()  # the second gateway dies too: no re-bridge left
        await call.wait_finished(timeout=20)
        rec = await _record(redis_client, call.call_id)
    assert len(media_dialogs(sim, call.call_id)) == 2
    assert call.end_reason == "api_hangup"
    assert rec["rebridges"] == "1"


async def test_a_refused_second_dialog_falls_back_to_hanging_up(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    async with platform(redis_url, redis_client) as (sim, gateway, _):
        sim.refuse_second_media_dialog = True
        call = await sim.place_call(CallScript(caller_wav=None, max_duration_s=40))
        await _admitted(gateway, 1)
        gateway.crash()
        await call.wait_finished(timeout=20)
        rec = await _record(redis_client, call.call_id)
    refused = [r for r in media_dialogs(sim, call.call_id) if r.status == 400]
    assert len(refused) == 1 and call.end_reason == "api_hangup"
    assert "HTTP 400" in rec["rebridge_refused"]


async def test_the_watch_does_not_judge_through_a_slow_redis(
        redis_url: str, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks slower than their interval (Redis slow, or this process stalled) say nothing
    about the gateways: a frozen gateway is declared lost only after LOST_AFTER of prompt
    checks, never from observations made around a slow one."""
    async with platform(redis_url, redis_client,
                        orchestrator_gateway_lost_after_s=30) as (sim, gateway, orch):
        call = await sim.place_call(CallScript(caller_wav=None, max_duration_s=40))
        await _admitted(gateway, 1)
        watch = GatewayWatch(orch.rt)  # the service's own watch waits 30 s: not in the way
        watch.lost_after_s = 1.0
        assert await watch.check_once() == 0
        gateway.freeze()
        clock = [time.monotonic()]

        def slow_clock() -> float:  # every reading of the clock: a slow round trip later
            clock[0] += watch.interval_s * 1.5
            return clock[0]
        monkeypatch.setattr(gateway_watch, "time", SimpleNamespace(monotonic=slow_clock))
        for _ in range(20):  # 20 slow checks: ~30 s of "frozen" heartbeat, never judged
            assert await watch.check_once() == 0
        monkeypatch.undo()
        t_prompt = time.monotonic()
        await wait_until(lambda: _judged(watch), 5, "the watch to judge the gateway lost")
        assert time.monotonic() - t_prompt >= watch.lost_after_s
        assert not call.finished


async def test_every_gateway_quiet_at_once_is_not_a_gateway_failure(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    async with platform(redis_url, redis_client,
                        orchestrator_gateway_lost_after_s=30) as (sim, gateway, orch):
        other = StandInGateway(redis_client, "gw-other")
        await other.start()
        try:
            await sim.place_call(CallScript(caller_wav=None, max_duration_s=40))
            await _admitted(gateway, 1)
            await redis_client.sadd(redis_keys.gateway_sessions("gw-other"), "call-elsewhere")
            watch = GatewayWatch(orch.rt)
            watch.lost_after_s = 0.5
            assert await watch.check_once() == 0
            gateway.freeze()
            other.freeze()
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:  # bounded observation window, not a wait
                assert await watch.check_once() == 0
                await asyncio.sleep(watch.interval_s / 5)
        finally:
            await other.stop()
    assert len(gateway.admitted) == 1


async def _judged(watch: GatewayWatch) -> bool:
    return await watch.check_once() > 0
