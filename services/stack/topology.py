"""The deployment topology, once: which processes, their ports, health paths and LB routes.

`callbridge stack` (local processes), the generated HAProxy configs and compose.yaml's drift
test all read this module, so a port or path changed here shows up (or fails a test)
everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from callbridge.services.stack.processes import ProcessSpec, callbridge_argv
from callbridge.shared.redis_server import free_port


@dataclass(frozen=True)
class Role:
    name: str            # compose service name and process name prefix
    command: str         # `callbridge <command>`
    port_env: str        # environment variable naming the listen port
    default_port: int
    ready_path: str
    lb_path: str | None  # path prefix HAProxy routes to this role; None = not behind the LB


INGRESS = Role("ingress", "ingress", "INGRESS_PORT", 8080, "/readyz", "/webhook")
ORCHESTRATOR = Role("orchestrator", "orchestrator", "ORCHESTRATOR_METRICS_PORT", 9101,
                    "/readyz", None)
GATEWAY = Role("gateway", "gateway", "GATEWAY_PORT", 8090, "/readyz", "/media")
ROLES = (INGRESS, ORCHESTRATOR, GATEWAY)

LB_PORT = 8000        # one public port: /webhook -> ingress, /media (WebSocket) -> gateways
LB_STATS_PORT = 8404  # HAProxy stats page (/stats), local only


@dataclass(frozen=True)
class Replica:
    role: Role
    index: int
    port: int

    @property
    def name(self) -> str:
        return f"{self.role.name}-{self.index}"


def plan_local(replicas: dict[str, int], fixed_ports: bool = False) -> list[Replica]:
    """Ports for N replicas of each role: defaults +i when fixed, else free ports."""
    out = []
    for role in ROLES:
        for i in range(1, replicas.get(role.name, 1) + 1):
            port = role.default_port + i - 1 if fixed_ports else free_port()
            out.append(Replica(role, i, port))
    return out


def process_specs(plan: list[Replica], env: dict[str, str]) -> list[ProcessSpec]:
    specs = []
    for replica in plan:
        role = replica.role
        replica_env = {**env, role.port_env: str(replica.port)}
        if role is GATEWAY:
            replica_env["GATEWAY_ID"] = replica.name
        specs.append(ProcessSpec(
            name=replica.name, argv=callbridge_argv(role.command), env=replica_env,
            ready_url=f"http://127.0.0.1:{replica.port}{role.ready_path}"))
    return specs
