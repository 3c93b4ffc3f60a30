"""HAProxy configuration, rendered from the topology for local processes and for compose.

One frontend: `/webhook` (HTTP) to the ingress pool, `/media` (WebSocket upgrade) to the
gateway pool. Health checks hit `/readyz`, so a draining replica (readiness false) stops
getting new work while its live calls continue. `timeout tunnel` governs an upgraded
WebSocket once established: sized for hour-long calls (an idle-looking media socket is still
a call), while `timeout client/server` stay short for plain HTTP.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from services.stack.topology import GATEWAY, INGRESS, LB_PORT, LB_STATS_PORT, Replica, Role

INSTALL_HINT = ("HAProxy is not installed. Debian/Ubuntu: `apt-get install haproxy`; "
                "macOS: `brew install haproxy`. Or run without the load balancer "
                "(`callbridge stack --no-lb`).")

_GLOBAL = """\
global
    log stdout format raw local0 info
    # Two FDs a proxied connection: keep under a typical 20k FD limit.
    maxconn 8000

defaults
    mode http
    log global
    option httplog
    option dontlognull
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout client-fin 30s
    timeout tunnel 2h
    default-server inter 1s fall 2 rise 2
"""


def _frontend(bind: str) -> str:
    return f"""
frontend public
    bind {bind}
    acl is_webhook path_beg {INGRESS.lb_path}
    acl is_media path_beg {GATEWAY.lb_path}
    http-request return status 404 content-type application/json \
        string '{{"error":"not_found"}}' unless is_webhook or is_media
    use_backend ingress if is_webhook
    use_backend gateway if is_media
"""


def _backend(role: Role, servers: list[str], balance: str, retry_on: str) -> str:
    # A replica that just started draining answers 503 until the health check marks it
    # down (up to inter x fall): retry such requests on another replica (L7 retry).
    lines = [f"\nbackend {role.name}", f"    balance {balance}",
             f"    option httpchk GET {role.ready_path}", "    http-check expect status 200",
             "    retries 3", "    option redispatch 1", f"    retry-on {retry_on}"]
    lines += [f"    {server}" for server in servers]
    return "\n".join(lines) + "\n"


def _backends(servers: Callable[[Role], list[str]]) -> str:
    # Webhooks: retry only when nothing reached the ingress (a 503 there means Redis is
    # down for every replica, and Infobip retries by itself). Media upgrades carry no body:
    # also retry a draining gateway's 503.
    return (_backend(INGRESS, servers(INGRESS), "roundrobin", "conn-failure empty-response")
            + _backend(GATEWAY, servers(GATEWAY), "leastconn",
                       "conn-failure empty-response 503"))


def _stats(bind: str) -> str:
    return f"\nfrontend stats\n    bind {bind}\n    stats enable\n    stats uri /stats\n"


def render_local(plan: list[Replica], lb_port: int = LB_PORT,
                 stats_port: int = LB_STATS_PORT) -> str:
    """Config for `callbridge stack`: servers are the local replicas' ports."""
    def servers(role: Role) -> list[str]:
        return [f"server {r.name} 127.0.0.1:{r.port} check" for r in plan if r.role is role]
    return (_GLOBAL + _frontend(f"127.0.0.1:{lb_port}")
            + _backends(servers) + _stats(f"127.0.0.1:{stats_port}"))


def render_compose(replicas: int = 2) -> str:
    """Config for compose.yaml: replicas found through Docker's DNS (server-template)."""
    def servers(role: Role) -> list[str]:
        return [f"server-template {role.name} {replicas} {role.name}:{role.default_port} "
                "check resolvers docker init-addr none"]
    resolvers = ("\nresolvers docker\n    nameserver dns 127.0.0.11:53\n"
                 "    hold valid 5s\n")
    return (_GLOBAL + resolvers + _frontend(f"*:{LB_PORT}")
            + _backends(servers) + _stats(f"*:{LB_STATS_PORT}"))


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None)


def check_config(binary: str, path: Path) -> None:
    """`haproxy -c`: refuse to start on a config HAProxy itself rejects."""
    result = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"HAProxy rejected {path}:\n{result.stdout}{result.stderr}")
