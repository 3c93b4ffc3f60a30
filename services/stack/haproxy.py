"""HAProxy configuration, rendered from the topology for local processes and for compose.

One frontend: `/webhook` (HTTP) to the ingress pool, `/media` (WebSocket upgrade) to the
gateway pool. Health checks hit `/readyz`, so a draining replica (readiness false) stops
getting new work while its live calls continue. `timeout tunnel` governs an upgraded
WebSocket once established: sized for hour-long calls (an idle-looking media socket is still
a call), while `timeout client/server` stay short for plain HTTP.

The edge, hardened here once for every rendering (HAProxy 2.6 configuration manual:
https://docs.haproxy.org/2.6/configuration.html):
- TLS terminates here when a certificate is given (`https://` webhooks, `wss://` media).
- The client's address travels in ONE header, ours: client-supplied `Forwarded`,
  `X-Forwarded-For` and `X-Real-IP` are deleted and `X-Forwarded-For` is set to the
  connection's source, so an ingress trusting this proxy cannot be fooled by a forged one.
- Slow clients: the whole request head AND body must arrive within `timeout http-request`
  (`option http-buffer-request` makes the body count), else 408; idle keep-alive is short.
- Per-source connection caps kept in stick tables: all connections (checked on accept,
  before any byte is parsed, so header dribblers cannot pile up), webhook requests and media
  sockets separately (429 past the cap). Infobip sends from a few addresses: size the media
  cap above the peak concurrent calls per Infobip address.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from callbridge.services.stack.topology import (
    GATEWAY,
    INGRESS,
    LB_PORT,
    LB_STATS_PORT,
    Replica,
    Role,
)
from callbridge.services.webhook_ingress.config import DEFAULT_CLIENT_ADDRESS_HEADER

INSTALL_HINT = ("HAProxy is not installed. Debian/Ubuntu: `apt-get install haproxy`; "
                "macOS: `brew install haproxy`. Or run without the load balancer "
                "(`callbridge stack --no-lb`).")

#: Where compose.yaml mounts the certificate (LB_TLS_CERT) in the HAProxy container.
COMPOSE_CERT_PATH = "/usr/local/etc/haproxy/certs/callbridge.pem"
#: Headers a client could use to claim an address or scheme; deleted, then ours are set.
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Proto")


@dataclass(frozen=True)
class EdgeLimits:
    """The load balancer's bounds on what one source may hold and how slow it may be."""

    http_request_timeout_s: float = 10.0   # whole head + body of a request
    keepalive_timeout_s: float = 10.0      # idle client connection between requests
    max_conn_per_source: int = 2000        # every connection, checked on accept
    max_webhook_conn_per_source: int = 200
    max_media_conn_per_source: int = 1500  # one per live call from that Infobip address


def _ms(seconds: float) -> str:
    """HAProxy time: whole seconds as `10s`, else milliseconds."""
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _global(limits: EdgeLimits) -> str:
    return f"""\
global
    log stdout format raw local0 info
    # Two FDs a proxied connection: keep under a typical 20k FD limit.
    maxconn 8000
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets

defaults
    mode http
    log global
    option httplog
    option dontlognull
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-request {_ms(limits.http_request_timeout_s)}
    timeout http-keep-alive {_ms(limits.keepalive_timeout_s)}
    timeout client-fin 30s
    timeout tunnel 2h
    default-server inter 1s fall 2 rise 2
"""


def _frontend(bind: str, limits: EdgeLimits, cert: str | None) -> str:
    tls = f" ssl crt {cert} alpn http/1.1" if cert else ""
    header = DEFAULT_CLIENT_ADDRESS_HEADER
    deletes = "".join(f"    http-request del-header {name}\n" for name in FORWARDING_HEADERS)
    return f"""
frontend public
    bind {bind}{tls}
    option http-buffer-request
    stick-table type ip size 200k expire 60s store conn_cur
    tcp-request connection track-sc0 src
    tcp-request connection reject if {{ sc0_conn_cur gt {limits.max_conn_per_source} }}
    acl is_webhook path_beg {INGRESS.lb_path}
    acl is_media path_beg {GATEWAY.lb_path}
    http-request return status 404 content-type application/json \
        string '{{"error":"not_found"}}' unless is_webhook or is_media
    http-request track-sc1 src table per_source_webhook if is_webhook
    http-request track-sc2 src table per_source_media if is_media
    http-request deny deny_status 429 if is_webhook \
        {{ sc1_conn_cur gt {limits.max_webhook_conn_per_source} }}
    http-request deny deny_status 429 if is_media \
        {{ sc2_conn_cur gt {limits.max_media_conn_per_source} }}
{deletes}    http-request set-header {header} %[src]
    http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
    use_backend ingress if is_webhook
    use_backend gateway if is_media

backend per_source_webhook
    stick-table type ip size 200k expire 60s store conn_cur

backend per_source_media
    stick-table type ip size 200k expire 60s store conn_cur
"""


def _backend(role: Role, servers: list[str], balance: str, retry_on: str,
             extra: tuple[str, ...] = ()) -> str:
    # A replica that just started draining answers 503 until the health check marks it
    # down (up to inter x fall): retry such requests on another replica (L7 retry).
    lines = [f"\nbackend {role.name}", f"    balance {balance}",
             f"    option httpchk GET {role.ready_path}", "    http-check expect status 200",
             "    retries 3", "    option redispatch 1", f"    retry-on {retry_on}",
             *(f"    {line}" for line in extra)]
    lines += [f"    {server}" for server in servers]
    return "\n".join(lines) + "\n"


#: A frozen gateway (SIGSTOP, a stalled VM) still accepts TCP connections (the kernel does)
#: but never answers, so it must be found by its health check quickly, and a WebSocket
#: upgrade it holds must be retried elsewhere: a re-bridged caller's new media leg goes to a
#: healthy gateway within the re-bridge budget (services/call_orchestrator/rebridge.py).
#: `timeout server` covers only the wait for the 101 answer: once upgraded, `timeout
#: tunnel` governs the call. Checks every 300 ms, each bounded by `timeout check`: DOWN
#: within about 0.9 s of a freeze, before the orchestrator (1.25-1.5 s) re-bridges its
#: callers. The price: a gateway too busy to answer /readyz within 300 ms twice in a row
#: gets no new calls until it does (its live calls are not affected).
GATEWAY_BACKEND = ("timeout server 1s", "timeout check 300ms",
                   "default-server inter 300ms fall 2 rise 2")


def _backends(servers: Callable[[Role], list[str]]) -> str:
    # Webhooks: retry only when nothing reached the ingress (a 503 there means Redis is
    # down for every replica, and Infobip retries by itself). Media upgrades carry no body:
    # also retry a draining gateway's 503.
    return (_backend(INGRESS, servers(INGRESS), "roundrobin", "conn-failure empty-response")
            + _backend(GATEWAY, servers(GATEWAY), "leastconn",
                       "conn-failure empty-response response-timeout 503", GATEWAY_BACKEND))


def _stats(bind: str) -> str:
    return f"\nfrontend stats\n    bind {bind}\n    stats enable\n    stats uri /stats\n"


def render_local(plan: list[Replica], lb_port: int = LB_PORT,
                 stats_port: int = LB_STATS_PORT, tls_cert: Path | None = None,
                 limits: EdgeLimits | None = None) -> str:
    """Config for `callbridge stack`: servers are the local replicas' ports. With
    `tls_cert` (a PEM holding the certificate chain and its private key) the public port
    speaks TLS only."""
    limits = limits or EdgeLimits()

    def servers(role: Role) -> list[str]:
        return [f"server {r.name} 127.0.0.1:{r.port} check" for r in plan if r.role is role]
    cert = str(tls_cert.resolve()) if tls_cert else None
    return (_global(limits) + _frontend(f"127.0.0.1:{lb_port}", limits, cert)
            + _backends(servers) + _stats(f"127.0.0.1:{stats_port}"))


def render_compose(replicas: int = 2, tls: bool = False) -> str:
    """Config for compose.yaml: replicas found through Docker's DNS (server-template).
    `tls`: the variant that terminates TLS with the certificate compose mounts
    (deploy/haproxy/haproxy-tls.cfg, chosen with LB_CONFIG)."""
    limits = EdgeLimits()

    def servers(role: Role) -> list[str]:
        return [f"server-template {role.name} {replicas} {role.name}:{role.default_port} "
                "check resolvers docker init-addr none"]
    resolvers = ("\nresolvers docker\n    nameserver dns 127.0.0.11:53\n"
                 "    hold valid 5s\n")
    return (_global(limits) + resolvers
            + _frontend(f"*:{LB_PORT}", limits, COMPOSE_CERT_PATH if tls else None)
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
