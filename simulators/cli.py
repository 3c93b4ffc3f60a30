"""`callbridge sim infobip` and `callbridge sim openai`: run a simulator until Ctrl-C.

Only parsing and handing over happen here; the simulators are imported inside the command
functions so `callbridge --help` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from callbridge.shared import event_loop

log = logging.getLogger(__name__)

SIM_DESCRIPTION = """\
Run a faithful stand-in for one of the platforms callbridge talks to, on this machine.
Nothing here reaches the internet: both simulators only talk to the URLs you give them.

  sim infobip   the Infobip Calls platform: Calls API, webhooks, callers, media WebSocket
  sim openai    the OpenAI Realtime API (GA protocol) answering with recorded speech
"""

INFOBIP_DESCRIPTION = """\
Simulate the Infobip Calls platform (Infobip's Calls API reference, https://www.infobip.com/docs/api).

It serves the Calls API subset callbridge uses (POST /calls/1/dialogs, call answer/hangup,
media-stream configs) with `Authorization: App <key>` checked and Infobip's error bodies.
Placed calls post CALL_RECEIVED to --webhook-url; when the orchestrator creates a dialog
with a WEBSOCKET child, the simulator opens the media WebSocket to the config's URL, sends
`websocket:connected` (customData flattened in), streams the caller WAV as 20 ms frames at
real time, records what the agent says, and posts the dialog and hang-up events.

examples:
  # the Calls API alone, on the default port 8070
  callbridge sim infobip

  # a media-stream config for a local gateway (its id is printed: put it in
  # INFOBIP_MEDIA_STREAM_CONFIG_ID), then place 2 calls to the local ingress
  callbridge sim infobip --media-url ws://127.0.0.1:8090/media --media-rate 24000 \\
      --webhook-url http://127.0.0.1:8080/webhook --place 2

  # a media client that nests customData and never answers pings (see what
  # `callbridge preflight --capture-call` reports about it)
  callbridge sim infobip --media-url ws://127.0.0.1:8090/media --media-custom-data nested \\
      --no-pongs --webhook-url http://127.0.0.1:8080/webhook --place 1

  # webhooks signed like a subscription with HTTP Basic and HMAC
  callbridge sim infobip --webhook-url http://127.0.0.1:8080/webhook \\
      --webhook-user infobip --webhook-password s3cret --webhook-hmac-secret k3y
"""

OPENAI_DESCRIPTION = """\
Simulate the OpenAI Realtime API, GA protocol only (https://platform.openai.com/docs/api-reference/realtime).

Serves ws://HOST:PORT/v1/realtime, checks `Authorization: Bearer <key>`, answers each caller
turn with real speech sent faster than real time (--speed), and refuses beta shapes.

examples:
  callbridge sim openai                      # ws://127.0.0.1:8060/v1/realtime
  callbridge sim openai --port 8061 --speed 1.0
  OPENAI_REALTIME_URL=ws://127.0.0.1:8060/v1/realtime callbridge gateway
"""


def register(subparsers: Any) -> None:
    """Add `sim` with its `infobip` and `openai` subcommands."""
    sim = subparsers.add_parser(
        "sim", help="run a simulated Infobip or OpenAI Realtime platform",
        description=SIM_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = sim.add_subparsers(dest="simulator", metavar="SIMULATOR", required=True)

    infobip = sub.add_parser(
        "infobip", help="simulated Infobip Calls platform (default port 8070)",
        description=INFOBIP_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    infobip.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    infobip.add_argument("--port", type=int, default=8070, help="port (default %(default)s)")
    infobip.add_argument("--api-key", default=os.environ.get("INFOBIP_API_KEY", "sim-infobip-key"),
                         help="key expected in `Authorization: App <key>` "
                              "(env INFOBIP_API_KEY, default sim-infobip-key)")
    infobip.add_argument("--webhook-url", help="where call events are posted, e.g. "
                                               "http://127.0.0.1:8080/webhook")
    infobip.add_argument("--webhook-user", help="HTTP Basic user for webhooks")
    infobip.add_argument("--webhook-password", help="HTTP Basic password for webhooks")
    infobip.add_argument("--webhook-hmac-secret",
                         help="sign webhooks with HMAC (scheme: --webhook-hmac-scheme)")
    infobip.add_argument("--webhook-hmac-scheme", action="append", metavar="KEY=VALUE",
                         help="how to sign, repeatable: header, timestamp-header (empty: "
                              "none), template ({timestamp}, {body}), encoding (hex|base64), "
                              "prefix, algorithm, milliseconds; defaults match the ingress's "
                              "WEBHOOK_HMAC_* defaults")
    infobip.add_argument("--media-url", help="create a media-stream config for this ws:// URL "
                                             "at start and print its id")
    infobip.add_argument("--media-rate", type=int, default=24000,
                         choices=(8000, 16000, 24000, 32000),
                         help="sampleRate of that config (default %(default)s)")
    infobip.add_argument("--place", type=int, default=0, metavar="N",
                         help="place N calls once started (needs --webhook-url)")
    infobip.add_argument("--caller-wav", help="what the placed callers say (mono 16-bit WAV; "
                                              "default the shipped order-status question)")
    infobip.add_argument("--throttle", action="store_true",
                         help="emulate the 20 dialog requests/s throttle with 429")
    # Media client modes that each break one assumption of docs/protocol-assumptions.md, so
    # `callbridge preflight --capture-call` can be seen reporting it.
    infobip.add_argument("--media-custom-data", choices=("flat", "nested"), default="flat",
                         help="customData in websocket:connected: flat top-level keys (the "
                              "assumption, default) or nested under a customData object")
    infobip.add_argument("--no-pongs", action="store_true",
                         help="the media client does not answer the gateway's WebSocket pings")
    infobip.add_argument("--silence-suppression", action="store_true",
                         help="send no media frames while the caller is silent (instead of "
                              "a steady 20 ms stream of silence)")
    infobip.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    infobip.add_argument("--log-format", default=os.environ.get("LOG_FORMAT", "text"),
                         choices=("json", "text"))
    infobip.set_defaults(func=run_infobip)

    openai = sub.add_parser(
        "openai", help="simulated OpenAI Realtime API (default port 8060)",
        description=OPENAI_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    openai.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    openai.add_argument("--port", type=int, default=8060, help="port (default %(default)s)")
    openai.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", "sk-sim"),
                        help="key expected as Bearer token (env OPENAI_API_KEY, default sk-sim)")
    openai.add_argument("--speed", type=float, default=4.0,
                        help="audio is sent this many times faster than real time "
                             "(default %(default)s)")
    openai.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    openai.add_argument("--log-format", default=os.environ.get("LOG_FORMAT", "text"),
                        choices=("json", "text"))
    openai.set_defaults(func=run_openai)


def _run(main: Coroutine[Any, Any, None]) -> int:
    """Run until Ctrl-C or SIGTERM (a supervisor's stop), then shut down cleanly."""
    with contextlib.suppress(KeyboardInterrupt):
        # uvloop: the simulators drive hundreds of sockets in bench/, much cheaper there
        event_loop.run(_until_signalled(main))
    return 0


async def _until_signalled(main: Coroutine[Any, Any, None]) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def run_infobip(args: argparse.Namespace) -> int:
    from callbridge.shared.logging_setup import setup_logging

    setup_logging("sim-infobip", args.log_level, args.log_format)
    if (args.webhook_user is None) != (args.webhook_password is None):
        print("--webhook-user and --webhook-password go together", file=sys.stderr)
        return 2
    if args.place and not args.webhook_url:
        print("--place needs --webhook-url (where CALL_RECEIVED is posted)", file=sys.stderr)
        return 2
    if args.webhook_hmac_scheme:
        from callbridge.simulators.infobip.webhooks import WebhookHmacScheme
        try:
            args.webhook_hmac_scheme = WebhookHmacScheme.parse(args.webhook_hmac_scheme)
        except ValueError as exc:
            print(f"--webhook-hmac-scheme: {exc}", file=sys.stderr)
            return 2
    return _run(_serve_infobip(args))


async def _serve_infobip(args: argparse.Namespace) -> None:
    from callbridge.simulators.infobip import CallScript, InfobipSimulator
    from callbridge.simulators.infobip.media_leg import MediaLegOptions

    auth = (args.webhook_user, args.webhook_password) if args.webhook_user else None
    secret = args.webhook_hmac_secret.encode() if args.webhook_hmac_secret else None
    sim = InfobipSimulator(host=args.host, port=args.port, api_key=args.api_key,
                           webhook_url=args.webhook_url, webhook_auth=auth,
                           webhook_hmac_secret=secret, throttle=args.throttle,
                           webhook_hmac_scheme=args.webhook_hmac_scheme or None,
                           media_options=MediaLegOptions(
                               custom_data=args.media_custom_data,
                               answer_pings=not args.no_pongs,
                               silence_suppression=args.silence_suppression))
    await sim.start()
    reports: list[asyncio.Task[None]] = []
    try:
        if args.media_url:
            config_id = sim.add_media_stream_config(args.media_url, args.media_rate)
            print(f"media-stream config id: {config_id}  "
                  f"(INFOBIP_MEDIA_STREAM_CONFIG_ID={config_id})", flush=True)
        print(f"Infobip simulator on {sim.base_url} (INFOBIP_BASE_URL={sim.base_url}); "
              "Ctrl-C to stop", flush=True)
        script = CallScript(caller_wav=args.caller_wav) if args.caller_wav else CallScript()
        calls = [await sim.place_call(script) for _ in range(args.place)]
        reports = [asyncio.create_task(_report_when_done(call)) for call in calls]
        await asyncio.Event().wait()  # until Ctrl-C cancels the run
    except asyncio.CancelledError:
        for task in reports:
            task.cancel()
        raise
    finally:
        log.info("stopping: %s", sim.summary())
        await sim.stop()


async def _report_when_done(call: Any) -> None:
    with contextlib.suppress(TimeoutError):
        await call.wait_finished(timeout=call.script.max_duration_s + 40)
    log.info("call %s ended (%s); caller heard %.1f s of agent audio; timeline %s",
             call.call_id, call.end_reason, len(call.received_pcm()) / 2 /
             (call.leg.sample_rate if call.leg else 8000), call.timeline)


def run_openai(args: argparse.Namespace) -> int:
    from callbridge.shared.logging_setup import setup_logging

    setup_logging("sim-openai", args.log_level, args.log_format)
    from callbridge.simulators.openai_realtime import (
        serve_forever,  # owned by the Realtime simulator
    )

    print(f"OpenAI Realtime simulator on ws://{args.host}:{args.port}/v1/realtime; "
          "Ctrl-C to stop", flush=True)
    return _run(serve_forever(args.host, args.port, args.api_key, args.speed))
