"""`LocalStack`: the deployment topology as local processes, optionally with the simulators.

Order matters and is the same every time: Redis -> simulators (in this process, so the demo
and tests can inspect what they saw) -> ingress/orchestrator/gateway processes (each waited
for on its /readyz) -> HAProxy (when asked for). Stopping runs in reverse, each service
getting SIGTERM so it drains like it would in production.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from callbridge.services.stack import haproxy
from callbridge.services.stack.processes import ManagedProcess, ProcessSpec, Supervisor
from callbridge.services.stack.simulated import (
    SIM_WEBHOOK_USER,
    Simulated,
    SimulatorSettings,
    start_simulators,
)
from callbridge.services.stack.topology import (
    GATEWAY,
    INGRESS,
    LB_PORT,
    LB_STATS_PORT,
    Replica,
    plan_local,
    process_specs,
)
from callbridge.shared.logging_setup import redact
from callbridge.shared.redis_server import RedisServer, free_port

if TYPE_CHECKING:
    from callbridge.simulators.infobip import InfobipSimulator
    from callbridge.simulators.openai_realtime import RealtimeSimulator

log = logging.getLogger(__name__)


@dataclass
class StackOptions:
    replicas: dict[str, int] = field(
        default_factory=lambda: {"ingress": 1, "orchestrator": 1, "gateway": 1})
    load_balancer: bool = False
    simulate: bool = True
    redis_url: str | None = None          # None: a private redis-server with AOF
    appendfsync: str = "everysec"
    # The private Redis: a password (requirepass; the URL the services get carries it) and
    # a memory bound with noeviction (full = writes refused, the ingress answers 503).
    redis_password: str | None = None
    redis_maxmemory: str = "512mb"
    # HAProxy: a PEM (certificate chain + key) makes the public port TLS-only; the bounds.
    tls_cert: Path | None = None
    edge_limits: haproxy.EdgeLimits | None = None
    sample_rate: int = 16000              # the simulated media-stream config's rate
    fixed_ports: bool = False             # topology default ports (8080, 8090, 8000, ...)
    log_dir: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    simulators: SimulatorSettings = field(default_factory=SimulatorSettings)


class LocalStack:
    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.log_dir = (options.log_dir or Path(tempfile.mkdtemp(prefix="callbridge-stack-"))
                        ).resolve()
        self.plan: list[Replica] = plan_local(options.replicas, options.fixed_ports)
        self.lb_port = LB_PORT if options.fixed_ports else free_port()
        self.lb_stats_port = LB_STATS_PORT if options.fixed_ports else free_port()
        self.supervisor = Supervisor(self.log_dir)
        self.redis: RedisServer | None = None
        self.redis_url = options.redis_url or ""
        self.simulated: Simulated | None = None
        self.haproxy: ManagedProcess | None = None
        # Webhook auth on by default, as in production: with the simulated Infobip and no
        # credentials chosen, a fresh Basic password for this stack only, given to both the
        # ingress and the simulator's webhook sender.
        sims = options.simulators
        if options.simulate and sims.webhook_basic is None and not sims.webhook_hmac_secret:
            self.options = replace(options, simulators=replace(
                sims, webhook_basic=(SIM_WEBHOOK_USER, secrets.token_urlsafe(24))))

    # Public URLs -----------------------------------------------------------------------
    def replicas(self, role_name: str) -> list[Replica]:
        return [r for r in self.plan if r.role.name == role_name]

    @property
    def _tls(self) -> bool:
        return self.options.load_balancer and self.options.tls_cert is not None

    @property
    def webhook_url(self) -> str:
        if self.options.load_balancer:
            scheme = "https" if self._tls else "http"
            return f"{scheme}://127.0.0.1:{self.lb_port}{INGRESS.lb_path}"
        return f"http://127.0.0.1:{self.replicas('ingress')[0].port}{INGRESS.lb_path}"

    @property
    def media_url(self) -> str:
        if self.options.load_balancer:
            scheme = "wss" if self._tls else "ws"
            return f"{scheme}://127.0.0.1:{self.lb_port}{GATEWAY.lb_path}"
        return f"ws://127.0.0.1:{self.replicas('gateway')[0].port}{GATEWAY.lb_path}"

    @property
    def webhook_auth_header(self) -> dict[str, str]:
        """The Authorization header the simulated Infobip sends (empty when none)."""
        basic = self.options.simulators.webhook_basic
        if basic is None:
            return {}
        import aiohttp

        return {"Authorization": aiohttp.encode_basic_auth(*basic)}

    @property
    def infobip(self) -> InfobipSimulator | None:
        return self.simulated.infobip if self.simulated else None

    @property
    def openai(self) -> RealtimeSimulator | None:
        return self.simulated.openai if self.simulated else None

    @property
    def media_config_id(self) -> str:
        return self.simulated.media_config_id if self.simulated else ""

    def service_env(self) -> dict[str, str]:
        """The environment every service process gets (to start one more like them)."""
        env = {"REDIS_URL": self.redis_url, **self._service_env_defaults()}
        if self.simulated is not None:
            env.update(self.simulated.env)
        return {**env, **self.options.extra_env}

    def process(self, name: str) -> ManagedProcess:
        return self.supervisor.get(name)

    # Lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        if not self.redis_url:
            self.redis = RedisServer(appendonly=True, appendfsync=self.options.appendfsync,
                                     data_dir=str(self.log_dir / "redis"),
                                     password=self.options.redis_password,
                                     maxmemory=self.options.redis_maxmemory or None)
            (self.log_dir / "redis").mkdir(exist_ok=True)
            self.redis.start()
            self.redis_url = self.redis.url
        if self.options.simulate:
            self.simulated = await start_simulators(
                self.options.simulators, self.webhook_url, self.media_url,
                self.options.sample_rate)
        await self.supervisor.start_all(process_specs(self.plan, self.service_env()))
        if self.options.load_balancer:
            await self._start_haproxy()

    def _service_env_defaults(self) -> dict[str, str]:
        return {"LOG_FORMAT": "json", "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO")}

    async def _start_haproxy(self) -> None:
        binary = haproxy.haproxy_binary()
        if not binary:
            raise RuntimeError(haproxy.INSTALL_HINT)
        cfg = self.log_dir / "haproxy.cfg"
        cfg.write_text(haproxy.render_local(self.plan, self.lb_port, self.lb_stats_port,
                                            tls_cert=self.options.tls_cert,
                                            limits=self.options.edge_limits))
        haproxy.check_config(binary, cfg)
        self.haproxy = self.supervisor.start(ProcessSpec(
            name="haproxy", argv=[binary, "-db", "-f", str(cfg)],
            ready_url=f"http://127.0.0.1:{self.lb_stats_port}/stats"))
        await self.haproxy.wait_ready(15)

    async def stop(self) -> None:
        await self.supervisor.stop_all()
        if self.simulated is not None:
            await self.simulated.stop()
        if self.redis is not None:
            self.redis.stop()

    async def __aenter__(self) -> LocalStack:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    def describe(self) -> list[tuple[str, str]]:
        """(what, where) rows for the start-up banner."""
        rows = [("redis", redact(self.redis_url))]
        if self.options.load_balancer:
            rows.append(("load balancer", f"{self.webhook_url}  {self.media_url}"))
            rows.append(("haproxy stats", f"http://127.0.0.1:{self.lb_stats_port}/stats"))
        for replica in self.plan:
            rows.append((replica.name, f"http://127.0.0.1:{replica.port} "
                                       f"(ready {replica.role.ready_path})"))
        if self.infobip is not None and self.openai is not None:
            rows.append(("infobip simulator", self.infobip.base_url))
            rows.append(("openai simulator", self.openai.url))
        rows.append(("logs", str(self.log_dir)))
        return rows
