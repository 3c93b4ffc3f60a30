"""`callbridge demo` command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from callbridge.shared.infobip_media import INFOBIP_RATES

HELP = """\
Run the whole system on this machine and place simulated calls through it.

Starts Redis (a private redis-server with AOF unless REDIS_URL is set), the Infobip and
OpenAI Realtime simulators, and the ingress, orchestrator and gateway as separate
processes; the simulated Infobip posts CALL_RECEIVED, the orchestrator bridges the call to
the gateway, the simulated caller speaks (a WAV), the simulated agent answers, the caller
hangs up. Then it prints a timeline with latencies and writes, per call, what the caller
heard (WAV) and the transcript (text) into --out.

examples:
  callbridge demo                      one call, timeline on stdout
  callbridge demo --calls 5 --json     five calls at once, one JSON summary
  callbridge demo --lb --replicas 2    through HAProxy with two of each service
  callbridge demo --target http://127.0.0.1:8000 --sim-host 172.17.0.1
                                       calls against a running compose deployment: the
                                       simulators listen on --sim-host (Docker's host
                                       gateway, which the containers reach as
                                       host.docker.internal) at :8070 and :8060

Against the real platforms there is nothing to simulate: run `callbridge ingress`,
`callbridge orchestrator` and `callbridge gateway` with real INFOBIP_* and OPENAI_*
settings (README.md, "Running against Infobip and OpenAI").
"""


def register(sub: Any) -> None:
    parser = sub.add_parser("demo", help="run everything locally and place simulated calls",
                            description=HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1, help="calls placed at once (default 1)")
    parser.add_argument("--caller-wav", type=Path, help="mono 16-bit WAV the caller speaks")
    parser.add_argument("--out", type=Path, default=Path("demo-out"),
                        help="where WAVs, transcripts and logs go (default ./demo-out)")
    parser.add_argument("--sample-rate", type=int, default=16000,
                        choices=INFOBIP_RATES,
                        help="media-stream config rate Infobip streams at (default 16000)")
    parser.add_argument("--lb", action="store_true", help="route through HAProxy")
    parser.add_argument("--replicas", type=int, default=1, help="processes of each service")
    parser.add_argument("--json", action="store_true", help="print one JSON summary")
    parser.add_argument("--target", metavar="URL",
                        help="a running deployment's load balancer (e.g. compose.yaml's)")
    parser.add_argument("--sim-host", default="127.0.0.1",
                        help="with --target: address the simulators listen on")
    parser.add_argument("--redis-url", help="with --target: the deployment's Redis, to read "
                                            "session records and transcripts")
    parser.add_argument("--simulate", action="store_true", default=True,
                        help="use the simulators (the default; there is no live mode here)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import asyncio
    import os
    import sys

    import orjson

    from callbridge.services.cli import require_simulators
    from callbridge.services.demo.report import render_text
    from callbridge.services.demo.runner import DemoOptions, run_demo
    from callbridge.shared.logging_setup import setup_logging

    require_simulators("demo")  # before anything starts (absent in the production image)
    setup_logging("demo", "WARNING", "text")
    if args.calls < 1:
        raise SystemExit("callbridge demo: --calls must be at least 1")
    opts = DemoOptions(calls=args.calls, caller_wav=args.caller_wav, out_dir=args.out,
                       redis_url=args.redis_url or os.environ.get("REDIS_URL") or None,
                       sample_rate=args.sample_rate, load_balancer=args.lb,
                       replicas=args.replicas, quiet=args.json, target=args.target,
                       sim_host=args.sim_host)
    from callbridge.services.stack.signals import cancel_on_signals

    try:
        reports = asyncio.run(cancel_on_signals(run_demo(opts)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("callbridge demo: interrupted; everything it started was stopped",
              file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError) as exc:
        raise SystemExit(f"callbridge demo failed: {exc}") from None
    completed = bool(reports) and all(r.completed for r in reports)
    if args.json:
        print(orjson.dumps({"completed": completed, "calls": [r.to_json() for r in reports],
                            "out_dir": str(args.out)}, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_text(reports))
    return 0 if completed else 1
