"""`callbridge gateway`: parse, load settings, hand over to `server.run_gateway`."""

from __future__ import annotations

import argparse
from typing import Any

from callbridge.shared.settings_help import SettingsHelpFormatter

DESCRIPTION = """\
Run the media gateway: Infobip opens one WebSocket per call (the dialog's WEBSOCKET child
endpoint); the gateway checks the call's one-time media token, opens an OpenAI Realtime
socket configured from the call's agent profile, and relays 20 ms PCM frames both ways,
with barge-in, tools (hang_up, transfer_to_human) and its state in Redis.

The same port answers GET /healthz, /readyz (503 at capacity or while draining) and
/metrics (Prometheus). SIGTERM drains: readiness false, no new calls, live calls finish
(up to GATEWAY_DRAIN_TIMEOUT_S).

Settings come from the environment or .env (flags override); their defaults:
@settings callbridge.services.media_gateway.config:GatewaySettings

examples:
  # against the OpenAI simulator (callbridge sim openai) on this machine
  OPENAI_API_KEY=sk-sim OPENAI_REALTIME_URL=ws://127.0.0.1:8060/v1/realtime \\
      callbridge gateway
  # behind a load balancer, 200 calls per process, custom agent profiles
  callbridge gateway --host 0.0.0.0 --max-sessions 200 --profiles /etc/callbridge/agents.toml
  # is it up? ready? what is it doing?
  curl -s 127.0.0.1:8090/readyz; curl -s 127.0.0.1:8090/metrics | grep active_sessions
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gateway", help="run the media gateway (Infobip media WebSocket <-> OpenAI Realtime)",
        description=DESCRIPTION, formatter_class=SettingsHelpFormatter)
    parser.add_argument("--host", help="bind address (GATEWAY_HOST)")
    parser.add_argument("--port", type=int, help="port for media and health (GATEWAY_PORT)")
    parser.add_argument("--max-sessions", type=int,
                        help="calls this process accepts (GATEWAY_MAX_SESSIONS)")
    parser.add_argument("--profiles", help="agent profiles TOML (AGENT_PROFILES_FILE)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from callbridge.services.media_gateway.config import GatewaySettings
    from callbridge.services.media_gateway.server import run_gateway
    from callbridge.shared import event_loop
    from callbridge.shared.logging_setup import setup_logging
    from callbridge.shared.settings import load_settings

    overrides = {key: value for key, value in (
        ("gateway_host", args.host), ("gateway_port", args.port),
        ("gateway_max_sessions", args.max_sessions), ("agent_profiles_file", args.profiles),
    ) if value is not None}
    settings = load_settings(GatewaySettings, **overrides)
    setup_logging("media_gateway", settings.log_level, settings.log_format)
    return event_loop.run(run_gateway(settings))
