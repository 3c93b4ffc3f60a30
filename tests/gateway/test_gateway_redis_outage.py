"""Redis stopped mid-call: the audio does not notice (no gap > ~100 ms at the caller), and
the gateway's state catches up once Redis is back (README "Architecture", "State in Redis,
audio never waits for it")."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from callbridge.services.media_gateway.server import Gateway
from callbridge.shared import redis_keys
from callbridge.shared.redis_server import RedisServer
from callbridge.simulators.infobip import MediaLeg
from callbridge.simulators.openai_realtime import RealtimeSimulator
from tests.gateway.fixtures import (
    caller_speech,
    gateway_settings,
    issue_token,
    new_call_id,
    wait_redis,
)


async def test_redis_outage_does_not_disturb_audio(restartable_redis: RedisServer,
                                                   rt_sim: RealtimeSimulator) -> None:
    redis = aioredis.Redis.from_url(restartable_redis.url)
    gw = Gateway(gateway_settings(restartable_redis.url, rt_sim))
    await gw.start()
    leg: MediaLeg | None = None
    try:
        call_id = new_call_id()
        token = await issue_token(redis, call_id)
        leg = MediaLeg(gw.url, 16000, {"cbToken": token, "cbCallId": call_id}, autoplay=False)
        await leg.connect()
        key = redis_keys.session_record(call_id)
        await wait_redis(lambda: redis.hgetall(key), lambda r: r.get(b"state") == b"streaming",
                         what="streaming recorded")
        assert await leg.wait_agent_quiet(quiet_ms=1000, timeout=20)

        await asyncio.to_thread(restartable_redis.stop)
        down_at = time.time()
        await leg.play(caller_speech(16000))  # a whole turn while Redis is down
        session = rt_sim.sessions[0]
        await session.wait_for("response.output_audio_transcript.done", timeout=20,
                               direction="sent", nth=2)
        assert await leg.wait_agent_audio(timeout=15, after=down_at)
        assert not gw.store.healthy, "the flusher never noticed Redis was down"
        up_at = time.time()
        gaps = [gap for t, gap, _ in leg.late_frames.gaps if down_at <= t <= up_at]
        assert max(gaps, default=0.0) < 100.0, f"audio gaps during the outage: {gaps}"
        assert len([t for t, _ in leg.frames if down_at <= t <= up_at]) >= \
            int((up_at - down_at) * 50 * 0.9)

        await asyncio.to_thread(restartable_redis.start)
        # Written during the outage, delivered after it: the agent's answer transcript.
        lines = await wait_redis(
            lambda: redis.xrange(redis_keys.transcript_stream(call_id)),
            lambda entries: any(b"order shipped" in e[1].get(b"text", b"") for e in entries),
            timeout=20, what="transcript caught up")
        roles = {e[1][b"role"] for e in lines}
        assert {b"agent", b"caller"} <= roles
        rec = await wait_redis(lambda: redis.hgetall(key),
                               lambda r: int(r.get(b"frames_in", 0)) > 200, what="counters")
        assert rec[b"gateway_id"] == gw.settings.gateway_id.encode()
        await leg.hangup()
        rec = await wait_redis(lambda: redis.hgetall(key), lambda r: r.get(b"state") == b"ended",
                               what="ended")
        assert rec[b"end_reason"] == b"caller_hangup"
        assert await redis.ttl(key) > 0
        assert await redis.ttl(redis_keys.transcript_stream(call_id)) > 0
        members = await redis.smembers(redis_keys.gateway_sessions(gw.settings.gateway_id))
        assert call_id.encode() not in members
        beat = await redis.get(redis_keys.gateway_heartbeat(gw.settings.gateway_id))
        assert beat is not None
    finally:
        if leg is not None:
            await leg.aclose()
        await gw.stop()
        await redis.aclose()
