"""Replay, dead letters and several orchestrators: still one dialog per call."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import result_key_prefix

from callbridge.services.call_orchestrator import replay
from callbridge.services.call_orchestrator.replay_cli import (
    run_dl_list,
    run_dl_purge,
    run_dl_replay,
    run_replay,
)
from callbridge.shared import redis_keys
from callbridge.shared.jobs import ARQ_SERIALIZERS
from tests.orchestrator.fixtures import (
    created,
    dialog_posts,
    quiet_call,
    running,
    sim_stack,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def stack(redis_url: str) -> AsyncIterator[dict[str, Any]]:
    async with sim_stack(redis_url) as parts:
        pool = await create_pool(RedisSettings.from_dsn(redis_url), **ARQ_SERIALIZERS)
        try:
            yield {**parts, "pool": pool}
        finally:
            await pool.aclose()



def replay_args(**kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = dict(from_id=None, to_id=None, since=None, until=None, call_id=None,
                                types=[], dry_run=False, force=False, yes=True)
    base.update(kw)
    return argparse.Namespace(**base)


def yes(_: str, __: bool) -> bool:
    return True


async def idle(redis: aioredis.Redis) -> bool:
    groups = await redis.xinfo_groups(redis_keys.EVENTS_STREAM)
    queued = await redis.zcard(redis_keys.JOB_QUEUE)
    return bool(groups) and groups[0]["pending"] == 0 and groups[0]["lag"] == 0 and not queued


async def test_replay_range_dry_run_then_real(stack: dict[str, Any], capsys: Any,
                                              redis_client: aioredis.Redis) -> None:
    sim, pool = stack["sim"], stack["pool"]
    async with running(stack["settings"]):
        calls = [await sim.place_call(quiet_call(30.0)) for _ in range(3)]
        for call in calls:
            await wait_until(lambda c=call: created(sim, c.call_id), what="bridged")
        await wait_until(lambda: idle(redis_client), what="idle")
        entries = await redis_client.xrange(redis_keys.EVENTS_STREAM)
        first, last = entries[0][0].decode(), entries[-1][0].decode()

        capsys.readouterr()
        assert await run_replay(pool, replay_args(from_id=first, to_id=last,
                                                  types=["CALL_RECEIVED"], dry_run=True),
                                yes) == 0
        out = capsys.readouterr().out
        assert "3 event(s) would be replayed" in out
        assert all(c.call_id[:8] in out for c in calls)

        # A real replay within arq's keep-result window: every job id is refused.
        assert await run_replay(pool, replay_args(from_id=first, to_id=last), yes) == 0
        out = capsys.readouterr().out
        assert "enqueued 0" in out and "skipped as duplicates 12" in out  # 3 x 4 handled
        assert "ignored (types we do not act on) 3" in out  # DIALOG_CREATED

        # After the results expired: the jobs run again and the guards make them no-ops.
        keys = [k async for k in redis_client.scan_iter(match=result_key_prefix + "*",
                                                        count=100)]
        await redis_client.delete(*keys)
        selected = await replay.select(pool, call_id=calls[0].call_id)
        assert {e.type for e in selected} >= {"CALL_RECEIVED", "DIALOG_ESTABLISHED"}
        summary = await replay.replay(pool, await replay.select(pool, from_id=first,
                                                                to_id=last))
        assert summary.enqueued == 12 and summary.failed == 0
        await wait_until(lambda: idle(redis_client), what="replayed jobs done")
    for call in calls:
        assert len(dialog_posts(sim, call.call_id)) == 1


async def test_forced_replay_rebridges_one_call(stack: dict[str, Any],
                                                redis_client: aioredis.Redis) -> None:
    sim, pool = stack["sim"], stack["pool"]
    async with running(stack["settings"]):
        call = await sim.place_call(quiet_call(30.0))
        await wait_until(lambda: created(sim, call.call_id), what="bridged")
        await wait_until(lambda: idle(redis_client), what="idle")
        assert await run_replay(pool, replay_args(call_id=call.call_id,
                                                  types=["CALL_RECEIVED"], force=True),
                                yes) == 0
        await wait_until(lambda: len(created(sim, call.call_id)) == 2, what="re-bridged")


async def test_two_orchestrators_one_dialog_per_call(stack: dict[str, Any],
                                                     redis_client: aioredis.Redis) -> None:
    sim, ingress = stack["sim"], stack["ingress"]
    import aiohttp

    async with running(stack["settings"], "orch-a"), running(stack["settings"], "orch-b"):
        calls = [await sim.place_call(quiet_call(30.0)) for _ in range(8)]
        async with aiohttp.ClientSession() as session:
            for call in calls:  # each CALL_RECEIVED delivered twice more
                body = orjson.dumps(call.events_of("CALL_RECEIVED")[0])
                for _ in range(2):
                    async with session.post(ingress.url, data=body) as resp:
                        assert resp.status == 200
        for call in calls:
            await wait_until(lambda c=call: created(sim, c.call_id), what="bridged")
        await wait_until(lambda: idle(redis_client), what="idle")
    for call in calls:
        assert len(dialog_posts(sim, call.call_id)) == 1


async def test_dead_letters_list_replay_purge(stack: dict[str, Any], capsys: Any,
                                              redis_client: aioredis.Redis) -> None:
    sim, pool = stack["sim"], stack["pool"]
    sim.faults.fail_next(1, status=400)
    async with running(stack["settings"]):
        call = await sim.place_call(quiet_call(30.0))
        await wait_until(lambda: redis_client.xlen(redis_keys.DEAD_LETTER_STREAM),
                         what="dead letter")
        capsys.readouterr()
        assert await run_dl_list(pool, argparse.Namespace(json=True)) == 0
        letters = orjson.loads(capsys.readouterr().out)
        assert letters[0]["call_id"] == call.call_id and "400" in letters[0]["error"]
        assert await run_dl_replay(pool, argparse.Namespace(ids=[letters[0]["id"]],
                                                            all=False)) == 0
        assert "re-enqueued 1" in capsys.readouterr().out
        assert await redis_client.xlen(redis_keys.DEAD_LETTER_STREAM) == 0
        await wait_until(lambda: idle(redis_client), what="replayed letter done")
    await _dead_letter(pool, "x1")
    assert await run_dl_purge(pool, argparse.Namespace(older_than="7d", yes=True), yes) == 0
    assert await redis_client.xlen(redis_keys.DEAD_LETTER_STREAM) == 1  # too young
    assert await run_dl_purge(pool, argparse.Namespace(older_than=None, yes=True), yes) == 0
    assert await redis_client.xlen(redis_keys.DEAD_LETTER_STREAM) == 0


async def _dead_letter(pool: ArqRedis, call_id: str) -> None:
    from callbridge.services.call_orchestrator import dead_letters

    await dead_letters.add(pool, job="hangup_call", job_id=f"hangup_call:{call_id}",
                           call_id=call_id, attempts=8, error="HTTP 500", args=[call_id, "x"])
