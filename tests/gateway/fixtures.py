"""Fixtures for the media gateway tests: the OpenAI simulator, a gateway on a free port,
one-time media tokens stored as the orchestrator stores them, and Infobip media legs.

Everything binds 127.0.0.1 on port 0. Waits are bounded and wait on conditions.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from callbridge.services.media_gateway.config import GatewaySettings
from callbridge.services.media_gateway.server import Gateway
from callbridge.shared import redis_keys
from callbridge.shared.media_tokens import MediaTokenRecord
from callbridge.shared.pcm import read_wav, resample
from callbridge.shared.profiles import ProfileBook
from callbridge.simulators import ASSETS_DIR
from callbridge.simulators.infobip import MediaLeg
from callbridge.simulators.openai_realtime import RealtimeSimulator

_ids = itertools.count(1)


def new_call_id() -> str:
    return f"call-{next(_ids)}-{secrets.token_hex(3)}"


def caller_speech(rate: int) -> bytes:
    pcm, src = read_wav(ASSETS_DIR / "caller_order_status.wav")
    return resample(pcm, src, rate)


async def issue_token(redis: aioredis.Redis, call_id: str, profile: str = "default",
                      ttl_s: int = 120, expires_in: float = 120.0, generation: int = 0,
                      resume: bool = False) -> str:
    """Exactly what the orchestrator stores (shared/media_tokens.py)."""
    token = secrets.token_urlsafe(24)
    record = MediaTokenRecord(call_id, profile, int(time.time() + expires_in), generation,
                              resume)
    await redis.set(redis_keys.media_token(token), record.to_json(), ex=ttl_s)
    return token



async def wait_redis(fetch: Callable[[], Awaitable[Any]], pred: Callable[[Any], bool],
                     timeout: float = 10.0, what: str = "") -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value = None
    for _ in range(int(timeout / 0.05) + 1):
        try:
            value = await fetch()
        except (ConnectionError, OSError):
            value = None
        if value is not None and pred(value):
            return value
        if loop.time() >= deadline:
            break
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}: last value {value!r}")


@pytest.fixture
async def rt_sim() -> AsyncIterator[RealtimeSimulator]:
    sim = RealtimeSimulator(host="127.0.0.1", port=0, api_key="sk-sim", speed=4.0)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


GatewayFactory = Callable[..., Awaitable[Gateway]]


def gateway_settings(redis_url: str, rt: RealtimeSimulator, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "redis_url": redis_url, "openai_api_key": "sk-sim", "openai_realtime_url": rt.url,
        "gateway_host": "127.0.0.1", "gateway_port": 0,
        "gateway_id": f"gw-test-{secrets.token_hex(3)}", "log_format": "text",
        "gateway_model_reconnect_timeout_s": 5.0, "gateway_drain_timeout_s": 10.0,
    }
    # The settings ignore unknown names (extra="ignore", for the environment): a misspelt or
    # renamed override would be dropped silently and the test would run on the default.
    unknown = set(overrides) - set(GatewaySettings.model_fields)
    if unknown:
        raise TypeError(f"not GatewaySettings fields: {sorted(unknown)}")
    values.update(overrides)
    return GatewaySettings(**values)


@pytest.fixture
async def make_gateway(redis_url: str, rt_sim: RealtimeSimulator
                       ) -> AsyncIterator[GatewayFactory]:
    started: list[Gateway] = []

    async def factory(profiles: ProfileBook | None = None, **overrides: Any) -> Gateway:
        gw = Gateway(gateway_settings(redis_url, rt_sim, **overrides), profiles=profiles)
        await gw.start()
        started.append(gw)
        return gw

    try:
        yield factory
    finally:
        for gw in started:
            await gw.stop()


LegFactory = Callable[..., Awaitable[MediaLeg]]


@pytest.fixture
async def open_leg(redis_client: aioredis.Redis) -> AsyncIterator[LegFactory]:
    """Connect a MediaLeg with a fresh valid token (or the custom data given)."""
    legs: list[MediaLeg] = []

    async def factory(gw: Gateway, rate: int = 24000, caller_pcm: bytes = b"",
                      custom_data: dict[str, str] | None = None, profile: str = "default",
                      autoplay: bool = True) -> MediaLeg:
        if custom_data is None:
            call_id = new_call_id()
            token = await issue_token(redis_client, call_id, profile)
            custom_data = {"cbToken": token, "cbCallId": call_id, "cbProfile": profile}
        leg = MediaLeg(gw.url, rate, custom_data, caller_pcm, autoplay=autoplay)
        await leg.connect()
        legs.append(leg)
        return leg

    try:
        yield factory
    finally:
        for leg in legs:
            await leg.aclose()
