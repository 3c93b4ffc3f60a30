"""`callbridge ingress`: parse flags, build IngressSettings (flags override the environment),
hand over to server.run. Heavy imports happen inside the command, so `callbridge --help`
stays fast.
"""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
Run the webhook ingress: Infobip posts Calls API events to POST /webhook; each valid event
is appended to the Redis events stream and answered 200 only after Redis acknowledged it.

  200  stored (body kept byte for byte, plus type, call_id, received_at)
  400  not JSON / not an Infobip event      413  body over INGRESS_MAX_BODY_BYTES
  415  not application/json                 401/403  authentication / source address
  503  Redis down or slower than INGRESS_APPEND_TIMEOUT_S (with Retry-After; Infobip retries)

Also: GET /healthz (alive), /readyz (Redis reachable and not draining), /metrics.
Settings come from the environment (.env too); each flag below overrides one of them.
Secrets are environment-only (never flags, which `ps` shows). At least one of Basic / HMAC
is required (an empty value is an error); the ingress does not start without:
  WEBHOOK_BASIC_USER / WEBHOOK_BASIC_PASSWORD   HTTP Basic
  WEBHOOK_HMAC_SECRET                           HMAC body signature (scheme: WEBHOOK_HMAC_*;
                                                Infobip's format is unpublished, see
                                                docs/protocol-assumptions.md)
  WEBHOOK_ALLOW_UNAUTHENTICATED=true            ...or run open on purpose (warned every start)
  WEBHOOK_ALLOWLIST / WEBHOOK_TRUSTED_PROXIES   source networks, comma separated
Redis must have AOF on (checked at start; INGRESS_REQUIRE_AOF=false skips it, warned).

Several processes may share one port (SO_REUSEPORT): just start more of them.
SIGTERM: /readyz turns 503, in-flight requests finish, then the process exits.
"""

EPILOG = """\
examples:
  WEBHOOK_HMAC_SECRET=$(openssl rand -hex 32) callbridge ingress   # 127.0.0.1:8080
  callbridge ingress --host 0.0.0.0 --port 8080 --redis-url redis://10.0.0.5:6379/0
  WEBHOOK_BASIC_USER=infobip WEBHOOK_BASIC_PASSWORD=... callbridge ingress --max-body-bytes 32768
  callbridge ingress --port 8080 & callbridge ingress --port 8080 &   # two processes, one port
  curl -s -XPOST localhost:8080/webhook -u infobip:... -H 'Content-Type: application/json' \\
       -d '{"type":"CALL_RECEIVED","callId":"c-1"}'
"""

# flag dest -> IngressSettings field
_OVERRIDES = {
    "host": "ingress_host",
    "port": "ingress_port",
    "path": "webhook_path",
    "redis_url": "redis_url",
    "max_body_bytes": "ingress_max_body_bytes",
    "body_timeout": "ingress_body_timeout_s",
    "append_timeout": "ingress_append_timeout_s",
    "retry_after": "ingress_retry_after_s",
    "events_maxlen": "events_maxlen",
    "events_max_age": "events_max_age_s",
    "drain_delay": "ingress_drain_delay_s",
    "shutdown_timeout": "ingress_shutdown_timeout_s",
    "coalesce": "ingress_coalesce",
    "uvloop": "ingress_uvloop",
    "log_level": "log_level",
    "log_format": "log_format",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ingress", help="run the webhook ingress (Infobip -> Redis events stream)",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=main)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    net = parser.add_argument_group("listening")
    net.add_argument("--host", help="bind address [INGRESS_HOST, default 127.0.0.1]")
    net.add_argument("--port", type=int, help="port [INGRESS_PORT, default 8080]")
    net.add_argument("--path", help="webhook path [WEBHOOK_PATH, default /webhook]")
    net.add_argument("--no-uvloop", dest="uvloop", action="store_const", const=False,
                     help="use asyncio's default loop [INGRESS_UVLOOP=false]")
    store = parser.add_argument_group("storage")
    store.add_argument("--redis-url", help="[REDIS_URL, default redis://127.0.0.1:6379/0]")
    store.add_argument("--append-timeout", type=float, metavar="SECONDS",
                       help="503 when Redis has not acknowledged within this "
                            "[INGRESS_APPEND_TIMEOUT_S, default 2]")
    store.add_argument("--retry-after", type=int, metavar="SECONDS",
                       help="Retry-After on 503 [INGRESS_RETRY_AFTER_S, default 5]")
    store.add_argument("--events-maxlen", type=int, metavar="N",
                       help="XADD MAXLEN ~ N, 0 = none [EVENTS_MAXLEN, default 1000000]")
    store.add_argument("--events-max-age", type=int, metavar="SECONDS",
                       help="trim by age instead (XADD MINID ~) [EVENTS_MAX_AGE_S, default 0]")
    store.add_argument("--no-coalesce", dest="coalesce", action="store_const", const=False,
                       help="one awaited XADD per request (benchmark comparison only) "
                            "[INGRESS_COALESCE=false]")
    limits = parser.add_argument_group("limits and shutdown")
    limits.add_argument("--max-body-bytes", type=int, metavar="N",
                        help="413 above this [INGRESS_MAX_BODY_BYTES, default 65536]")
    limits.add_argument("--body-timeout", type=float, metavar="SECONDS",
                        help="408 when a body stalls [INGRESS_BODY_TIMEOUT_S, default 10]")
    limits.add_argument("--drain-delay", type=float, metavar="SECONDS",
                        help="readiness false this long before closing "
                             "[INGRESS_DRAIN_DELAY_S, default 2]")
    limits.add_argument("--shutdown-timeout", type=float, metavar="SECONDS",
                        help="longest wait for in-flight requests "
                             "[INGRESS_SHUTDOWN_TIMEOUT_S, default 15]")
    logs = parser.add_argument_group("logging")
    logs.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                      help="[LOG_LEVEL, default INFO]")
    logs.add_argument("--log-format", choices=["json", "text"], help="[LOG_FORMAT, default json]")


def settings_from_args(args: argparse.Namespace) -> Any:
    from callbridge.services.webhook_ingress.config import IngressSettings
    from callbridge.shared.settings import load_settings

    overrides = {field: getattr(args, dest) for dest, field in _OVERRIDES.items()
                 if getattr(args, dest, None) is not None}
    return load_settings(IngressSettings, **overrides)


def main(args: argparse.Namespace) -> int:
    from callbridge.services.webhook_ingress.server import run

    return run(settings_from_args(args))
