"""A `LocalStack` for the fault suite: known secrets everywhere, webhook auth on, short timeouts.

Every scenario runs with distinctive secret values (scenario 11 greps all logs of the run
for them), with HTTP Basic + HMAC on the webhook and a password on Redis, the way production
runs; the subclass
adds the conveniences scenarios share (an extra gateway outside the LB, a Redis client).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from callbridge.services.stack.haproxy import EdgeLimits
from callbridge.services.stack.processes import ManagedProcess, ProcessSpec, callbridge_argv
from callbridge.services.stack.runner import LocalStack, StackOptions
from callbridge.services.stack.simulated import SimulatorSettings
from callbridge.shared.redis_server import free_port
from callbridge.shared.webhook_signing import sign_headers

# Distinctive values: nothing else in a log line could contain them by chance.
INFOBIP_KEY = "FAULTSECRET-infobip-7f3a9c1e55d24b08"
OPENAI_KEY = "sk-FAULTSECRET-openai-c0ffee4242d1e5a1"
BASIC_USER = "infobip-hooks"
BASIC_PASSWORD = "FAULTSECRET-basic-9b2e6d0f13a7c4e8"
HMAC_SECRET = "FAULTSECRET-hmac-5e8a1d7c3b9f2064"
# Redis requires a password on every fault stack (requirepass): every service's REDIS_URL
# carries it, so scenario 11 checks that no URL reaches a log unredacted.
REDIS_PASSWORD = "FAULTSECRET-redis-4c7d2e9a1f60b385"
SECRETS = {"INFOBIP_API_KEY": INFOBIP_KEY, "OPENAI_API_KEY": OPENAI_KEY,
           "WEBHOOK_BASIC_PASSWORD": BASIC_PASSWORD, "WEBHOOK_HMAC_SECRET": HMAC_SECRET,
           "REDIS_PASSWORD": REDIS_PASSWORD}
BASIC_HEADER = "Basic " + base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()

#: Service settings shortened so faults resolve within a CI-sized run (names: services'
#: config.py). Scenarios override single values through `extra_env`.
FAST_ENV = {
    "INGRESS_DRAIN_DELAY_S": "0.3",
    "INGRESS_SHUTDOWN_TIMEOUT_S": "3",
    "ORCHESTRATOR_SHUTDOWN_GRACE_S": "3",
    "ORCHESTRATOR_CLAIM_IDLE_S": "3",
    "ORCHESTRATOR_CLAIM_INTERVAL_S": "1",
    "INFOBIP_REQUEST_TIMEOUT_S": "2",
    "ORCHESTRATOR_JOB_TIMEOUT_S": "8",
    "ORCHESTRATOR_RETRY_CAP_S": "4",
    "ORCHESTRATOR_POLL_DELAY_S": "0.1",
    "GATEWAY_DRAIN_TIMEOUT_S": "60",
    "GATEWAY_TOOL_END_GRACE_S": "5",
}


def webhook_headers(body: bytes) -> dict[str, str]:
    """What Infobip sends with a subscription secured by Basic + HMAC."""
    return {"Content-Type": "application/json", "Authorization": BASIC_HEADER,
            **sign_headers(HMAC_SECRET.encode(), body)}


@dataclass
class FaultOptions:
    replicas: dict[str, int] = field(
        default_factory=lambda: {"ingress": 1, "orchestrator": 1, "gateway": 1})
    load_balancer: bool = False
    appendfsync: str = "everysec"
    env: dict[str, str] = field(default_factory=dict)
    model_speed: float = 4.0
    keep_sessions: int | None = 200
    sample_rate: int = 16000
    edge_limits: EdgeLimits | None = None  # HAProxy's bounds (load_balancer only)


class FaultStack(LocalStack):
    """`LocalStack` with the suite's secrets and webhook authentication."""

    def __init__(self, opts: FaultOptions, log_dir: Path) -> None:
        simulators = SimulatorSettings(
            infobip_api_key=INFOBIP_KEY, openai_api_key=OPENAI_KEY,
            webhook_basic=(BASIC_USER, BASIC_PASSWORD), webhook_hmac_secret=HMAC_SECRET,
            model_speed=opts.model_speed, keep_sessions=opts.keep_sessions)
        super().__init__(StackOptions(
            replicas=dict(opts.replicas), load_balancer=opts.load_balancer,
            appendfsync=opts.appendfsync, log_dir=log_dir, extra_env={**FAST_ENV, **opts.env},
            simulators=simulators, sample_rate=opts.sample_rate,
            redis_password=REDIS_PASSWORD, edge_limits=opts.edge_limits))
        self.fault_opts = opts
        self._client: aioredis.Redis | None = None

    # Conveniences ------------------------------------------------------------------------
    async def start_gateway(self, name: str, extra: dict[str, str]) -> tuple[ManagedProcess,
                                                                             int]:
        """One more gateway process outside the LB (its own port and id)."""
        port = free_port()
        env = {**self.service_env(), "GATEWAY_PORT": str(port), "GATEWAY_ID": name, **extra}
        proc = self.supervisor.start(ProcessSpec(
            name=name, argv=callbridge_argv("gateway"), env=env,
            ready_url=f"http://127.0.0.1:{port}/readyz"))
        await proc.wait_ready(30)
        return proc, port

    @property
    def redis_client(self) -> aioredis.Redis:
        if self._client is None:
            self._client = aioredis.Redis.from_url(self.redis_url, socket_timeout=5,
                                                   socket_connect_timeout=2)
        return self._client

    def port_of(self, name: str) -> int:
        return next(r.port for r in self.plan if r.name == name)

    def pid_of(self, name: str) -> int:
        pid = self.process(name).pid
        assert pid is not None
        return pid

    def alive(self) -> dict[str, bool]:
        return {p.name: p.alive() for p in self.supervisor.processes}

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        await super().stop()


def rss_kb(pid: int) -> int:
    """VmRSS of a process from /proc/<pid>/status (kB); 0 when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def socket_count(pid: int) -> int:
    """Open sockets of a process (its /proc fd table)."""
    base = Path(f"/proc/{pid}/fd")
    count = 0
    try:
        for fd in base.iterdir():
            try:
                if fd.readlink().as_posix().startswith("socket:"):
                    count += 1
            except OSError:
                continue
    except OSError:
        return -1
    return count


def now() -> float:
    return time.time()


def decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
