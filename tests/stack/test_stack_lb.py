"""The deployment topology on one machine, through a real HAProxy (issue: deployment).

20 simulated calls over two gateways and two orchestrator workers; one gateway drained with
SIGTERM mid-call (its live calls finish, new calls land on the other); one ingress SIGKILLed
under webhook load (every event that got a 200 is in the stream); every call bridged once.
Invariants are read from Redis and the simulators' records, never from service logs.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from callbridge.services.stack.haproxy import haproxy_binary
from callbridge.services.stack.runner import LocalStack, StackOptions
from callbridge.shared import redis_keys
from callbridge.simulators import ASSETS_DIR
from callbridge.simulators.infobip import CallScript, SimCall
from tests.stack.fixtures import WebhookLoad, wait_lb_status
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CALLER = ASSETS_DIR / "caller_order_status.wav"


async def _gateway_of(client: aioredis.Redis, call_id: str) -> str:
    value = await client.hget(redis_keys.session_record(call_id), "gateway_id")
    return value.decode() if value else ""


async def test_twenty_calls_drain_and_ingress_kill_through_haproxy(tmp_path: Path) -> None:
    if haproxy_binary() is None:
        pytest.skip("haproxy is not installed (scripts/bootstrap.sh installs it)")
    options = StackOptions(replicas={"ingress": 2, "orchestrator": 2, "gateway": 2},
                           load_balancer=True, appendfsync="always",
                           log_dir=tmp_path / "logs")
    async with LocalStack(options) as stack:
        sim = stack.infobip
        assert sim is not None
        client = aioredis.Redis.from_url(stack.redis_url)
        try:
            first: list[SimCall] = [await sim.place_call(CallScript(caller_wav=CALLER))
                                    for _ in range(10)]
            await wait_until(lambda: all(c.timeline.get("first_agent_audio") for c in first),
                             60, "the first 10 calls to hear the agent")

            # Session records are written asynchronously (audio never waits for Redis).
            async def placed() -> bool:
                return all([await _gateway_of(client, c.call_id) for c in first])

            await wait_until(placed, 10, "every session record to name its gateway")
            before = {c.call_id: await _gateway_of(client, c.call_id) for c in first}
            assert set(before.values()) == {"gateway-1", "gateway-2"}, before

            # Drain gateway-1 mid-call, and kill ingress-1 under webhook load meanwhile.
            stack.process("gateway-1").send_signal(signal.SIGTERM)
            await wait_lb_status(stack.lb_stats_port, "gateway", "gateway-1", "DOWN")
            load = WebhookLoad(stack.webhook_url, headers=stack.webhook_auth_header)
            load_task = asyncio.create_task(load.run(total=600))
            await wait_until(lambda: len(load.acked) >= 100, 30, "100 acknowledged webhooks")
            stack.process("ingress-1").send_signal(signal.SIGKILL)
            acked_at_kill = len(load.acked)

            second = [await sim.place_call(CallScript(caller_wav=CALLER)) for _ in range(10)]
            await load_task
            await asyncio.gather(*(c.wait_finished(timeout=120) for c in first + second))

            # The drained gateway's calls were not cut: they ended by the caller hanging up.
            drained = [c for c in first if before[c.call_id] == "gateway-1"]
            assert drained
            for call in drained:
                assert call.end_reason == "caller_hangup", (call.call_id, call.end_reason)
            # The drained gateway exits by itself once its last call ended.
            assert await stack.process("gateway-1").wait_exit(30) == 0
            # New calls all landed on the other gateway.
            after = {await _gateway_of(client, c.call_id) for c in second}
            assert after == {"gateway-2"}, after
            # Every call bridged exactly once and heard by the caller.
            for call in first + second:
                dialogs = [r for r in sim.dialog_requests
                           if (r.json or {}).get("parentCallId") == call.call_id]
                assert len(dialogs) == 1, (call.call_id, len(dialogs))
                assert call.end_reason == "caller_hangup"
            # Every webhook that got a 200 is in the stream, despite the SIGKILL.
            stored = {f[b"call_id"].decode() for _, f in
                      await client.xrange(redis_keys.EVENTS_STREAM)}
            missing = [c for c in load.acked if c not in stored]
            assert not missing, f"{len(missing)} acknowledged webhooks lost: {missing[:3]}"
            # The load balancer routed around the dead ingress: acknowledgements went on.
            assert len(load.acked) > acked_at_kill, load.statuses
            assert "500" not in load.statuses, load.statuses
        finally:
            await client.aclose()
