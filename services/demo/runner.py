"""`callbridge demo`: simulated calls through callbridge, and a report of each.

Two ways: the whole system started here (`LocalStack`), or `--target` an already running
deployment (compose.yaml) whose orchestrators and gateways were configured for the
simulators, which then run here and play Infobip and OpenAI for it.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from callbridge.services.demo.report import CallReport, build_report
from callbridge.services.stack.runner import LocalStack, StackOptions
from callbridge.services.stack.simulated import (
    DEMO_MEDIA_CONFIG_ID,
    SimulatorSettings,
    start_simulators,
)
from callbridge.shared import redis_keys

if TYPE_CHECKING:
    from callbridge.simulators.infobip import InfobipSimulator


@dataclass
class DemoOptions:
    calls: int = 1
    caller_wav: Path | None = None
    out_dir: Path = Path("demo-out")
    redis_url: str | None = None
    sample_rate: int = 16000
    load_balancer: bool = False
    replicas: int = 1
    call_timeout_s: float = 90.0
    quiet: bool = False
    target: str | None = None          # base URL of a running deployment's load balancer
    sim_host: str = "127.0.0.1"        # where the simulators listen (--target mode)
    sim_ports: tuple[int, int] = (8070, 8060)  # Infobip, OpenAI: compose.yaml's defaults


def _say(opts: DemoOptions, text: str) -> None:
    if not opts.quiet:
        print(text, file=sys.stderr, flush=True)


async def run_demo(opts: DemoOptions) -> list[CallReport]:
    if opts.target:
        return await _run_against_target(opts)
    stack_opts = StackOptions(
        replicas={"ingress": opts.replicas, "orchestrator": opts.replicas,
                  "gateway": opts.replicas},
        load_balancer=opts.load_balancer, simulate=True, redis_url=opts.redis_url,
        sample_rate=opts.sample_rate, log_dir=opts.out_dir / "logs")
    _say(opts, "starting Redis, the simulators and the services ...")
    async with LocalStack(stack_opts) as stack:
        for what, where in stack.describe():
            _say(opts, f"  {what:<18} {where}")
        assert stack.infobip is not None
        return await _place_and_report(opts, stack.infobip, stack.redis_url)


class DeploymentWebhookAuth(BaseSettings):
    """The target deployment's webhook credentials (its environment / .env: the same
    variables its ingress reads), which the simulated Infobip subscription must send."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore", case_sensitive=False)

    webhook_basic_user: str | None = None
    webhook_basic_password: SecretStr | None = None
    webhook_hmac_secret: SecretStr | None = None


def deployment_simulator_auth() -> tuple[tuple[str, str] | None, str | None]:
    """(Basic credentials, HMAC secret) for the simulator; exits with advice when the
    deployment's credentials are not in the environment."""
    auth = DeploymentWebhookAuth()
    basic = None
    if auth.webhook_basic_user and auth.webhook_basic_password:
        basic = (auth.webhook_basic_user, auth.webhook_basic_password.get_secret_value())
    secret = auth.webhook_hmac_secret.get_secret_value() if auth.webhook_hmac_secret else None
    if basic is None and not secret:
        raise SystemExit(
            "callbridge demo --target: the deployment's ingress requires webhook "
            "authentication; set WEBHOOK_BASIC_USER + WEBHOOK_BASIC_PASSWORD (and/or "
            "WEBHOOK_HMAC_SECRET) to the deployment's values (its .env) so the simulated "
            "Infobip sends them")
    return basic, secret


async def _run_against_target(opts: DemoOptions) -> list[CallReport]:
    assert opts.target is not None
    basic, hmac_secret = deployment_simulator_auth()
    base = opts.target.rstrip("/")
    media = "ws" + base.removeprefix("http") + "/media"
    # Fixed ports and config id: what compose.yaml's defaults point the services at.
    infobip_port, openai_port = opts.sim_ports
    settings = SimulatorSettings(host=opts.sim_host, infobip_port=infobip_port,
                                 openai_port=openai_port, media_config_id=DEMO_MEDIA_CONFIG_ID,
                                 webhook_basic=basic, webhook_hmac_secret=hmac_secret)
    simulated = await start_simulators(settings, base + "/webhook", media, opts.sample_rate)
    _say(opts, f"simulators on {opts.sim_host} (Infobip :{infobip_port}, OpenAI "
               f":{openai_port}); calls go to {base}/webhook, media to {media}")
    try:
        return await _place_and_report(opts, simulated.infobip, opts.redis_url)
    finally:
        await simulated.stop()


async def _place_and_report(opts: DemoOptions, infobip: InfobipSimulator,
                            redis_url: str | None) -> list[CallReport]:
    from callbridge.simulators import ASSETS_DIR
    from callbridge.simulators.infobip import CallScript

    caller_wav = opts.caller_wav or ASSETS_DIR / "caller_order_status.wav"
    _say(opts, f"placing {opts.calls} call(s) with {caller_wav.name} ...")
    calls = await asyncio.gather(*(infobip.place_call(CallScript(caller_wav=caller_wav))
                                   for _ in range(opts.calls)))
    await asyncio.gather(*(call.wait_finished(timeout=opts.call_timeout_s) for call in calls))
    _say(opts, "calls finished; collecting records ...")
    if not redis_url:
        return [await build_report(call, infobip, None, opts.sample_rate, opts.out_dir)
                for call in calls]
    client = aioredis.Redis.from_url(redis_url)
    try:
        # The gateway writes its final session record when the media socket closes,
        # which can trail the caller's hang-up by a moment: wait for it (bounded).
        await _wait_sessions_ended(client, [c.call_id for c in calls], timeout=10)
        return [await build_report(call, infobip, client, opts.sample_rate, opts.out_dir)
                for call in calls]
    finally:
        await client.aclose()


async def _wait_sessions_ended(client: aioredis.Redis, call_ids: list[str],
                               timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        states = [await client.hget(redis_keys.session_record(c), "state") for c in call_ids]
        if all(s == b"ended" for s in states):
            return
        await asyncio.sleep(0.05)  # bounded poll of a record another process writes
