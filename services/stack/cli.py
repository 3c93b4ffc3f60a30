"""`callbridge stack`: the production topology as local processes, until Ctrl-C."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = """\
Start the deployment topology of compose.yaml as local processes: a private Redis (AOF on),
HAProxy in front (/webhook -> ingress replicas, /media -> gateway replicas, health checks on
/readyz), and N ingress, N orchestrator and N gateway processes. With --simulate (the default
when INFOBIP_BASE_URL is not set) the Infobip and OpenAI simulators run inside this process
and point at the load balancer. Prints where everything listens; Ctrl-C stops it all, each
service drained with SIGTERM.

examples:
  callbridge stack                           2 of each behind HAProxy on port 8000
  callbridge stack --replicas 3 --calls 5    and place 5 simulated calls through it
  callbridge stack --no-lb --replicas 1      without HAProxy
  callbridge status --watch                  (another terminal) see calls and gateways live

HAProxy comes from your distribution: `apt-get install haproxy`.
"""


def register(sub: Any) -> None:
    parser = sub.add_parser("stack", help="run the multi-process topology behind HAProxy",
                            description=HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=2, help="processes per service (2)")
    parser.add_argument("--no-lb", action="store_true", help="run without HAProxy")
    parser.add_argument("--fixed-ports", action="store_true",
                        help="use the default ports (LB 8000, ingress 8080+, gateway 8090+)")
    parser.add_argument("--appendfsync", choices=("everysec", "always"), default="everysec",
                        help="Redis AOF fsync policy (always: no acknowledged event lost)")
    parser.add_argument("--tls-cert", type=Path, metavar="PEM",
                        help="terminate TLS at HAProxy with this PEM (certificate chain and "
                             "private key): https:// webhooks, wss:// media")
    parser.add_argument("--calls", type=int, default=0,
                        help="place this many simulated calls once everything is up")
    # The simulated Infobip's media client can break one protocol assumption each
    # (docs/protocol-assumptions.md), to see `callbridge preflight --capture-call` report it.
    parser.add_argument("--media-custom-data", choices=("flat", "nested"), default="flat",
                        help="simulated Infobip: customData flat in websocket:connected "
                             "(default) or nested under customData")
    parser.add_argument("--no-pongs", action="store_true",
                        help="simulated Infobip: do not answer the gateway's pings")
    parser.add_argument("--silence-suppression", action="store_true",
                        help="simulated Infobip: no media frames while the caller is silent")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from callbridge.services.stack.runner import LocalStack, StackOptions
    from callbridge.services.stack.simulated import SimulatorSettings
    from callbridge.shared.logging_setup import redact, setup_logging

    setup_logging("stack", "INFO", "text")
    simulate = not os.environ.get("INFOBIP_BASE_URL")
    options = StackOptions(
        replicas={"ingress": args.replicas, "orchestrator": args.replicas,
                  "gateway": args.replicas},
        load_balancer=not args.no_lb, simulate=simulate,
        redis_url=os.environ.get("REDIS_URL") or None, appendfsync=args.appendfsync,
        fixed_ports=args.fixed_ports, tls_cert=args.tls_cert,
        simulators=SimulatorSettings(media_custom_data=args.media_custom_data,
                                     media_answer_pings=not args.no_pongs,
                                     media_silence_suppression=args.silence_suppression))
    if args.tls_cert is not None and not args.tls_cert.is_file():
        raise SystemExit(f"--tls-cert {args.tls_cert}: no such file (a PEM with the "
                         "certificate chain followed by its private key)")

    async def run() -> None:
        async with LocalStack(options) as stack:
            print("callbridge stack is up:")
            for what, where in stack.describe():
                print(f"  {what:<18} {where}")
            print(f"  export REDIS_URL={redact(stack.redis_url)}   # for `callbridge status`")
            if args.calls and stack.infobip is not None:
                from callbridge.simulators import ASSETS_DIR
                from callbridge.simulators.infobip import CallScript

                calls = [await stack.infobip.place_call(
                    CallScript(caller_wav=ASSETS_DIR / "caller_order_status.wav"))
                    for _ in range(args.calls)]
                print(f"placed {len(calls)} simulated call(s)")
            print("Ctrl-C to stop.")
            await asyncio.Event().wait()

    from callbridge.services.stack.signals import cancel_on_signals

    try:
        asyncio.run(cancel_on_signals(run()))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\nstopped: every process was sent SIGTERM and has exited.")
    except (RuntimeError, TimeoutError) as exc:
        raise SystemExit(f"callbridge stack failed: {exc}") from None
    return 0
