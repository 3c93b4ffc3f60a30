"""`InfobipSimulator`: the Calls API, the webhook poster and the callers, in one process.

Tests, the demo and `callbridge sim infobip` all start this same object (aiohttp's
AppRunner/TCPSite, so stop is graceful). It only ever talks to the URLs it is given.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from aiohttp import web

from .api import DIALOG_RATE_PER_S, DIALOGS_PATH, create_app
from .calls import CallState, DialogState, Identity
from .configs import CONFIG_PATH, StoredConfig, config_from_request, new_config_id
from .faults import Faults
from .http_common import RecordedRequest
from .media_leg import MediaLegOptions
from .script import CallScript
from .sim_call import SimCall
from .spec_validation import published_spec
from .webhooks import WebhookAttempt, WebhookHmacScheme, WebhookPoster

log = logging.getLogger(__name__)


class InfobipSimulator:
    """A faithful stand-in for the Infobip Calls platform (see the common brief's
    "Simulator interfaces" for how tests use it)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 api_key: str = "sim-infobip-key", webhook_url: str | None = None,
                 webhook_auth: tuple[str, str] | None = None,
                 webhook_hmac_secret: bytes | None = None, *, throttle: bool = False,
                 throttle_retry_after: float | None = None,
                 webhook_attempts: int = 4, webhook_backoff_s: float = 0.25,
                 webhook_timeout_s: float = 5.0, ident: Identity | None = None,
                 media_options: MediaLegOptions | None = None,
                 webhook_hmac_scheme: WebhookHmacScheme | None = None) -> None:
        self.host = host
        #: Media client behaviour of every call placed (MediaLegOptions: customData layout,
        #: pong replies, silence suppression); settable before a call is placed.
        self.media_options = media_options or MediaLegOptions()
        self.port = port
        self.api_key = api_key
        #: Emulate the platform's 20 dialog requests/s throttle with 429 (off by default:
        #: tests that need it turn it on). The real Retry-After header is *unverified*.
        self.throttle = throttle
        self.throttle_retry_after = throttle_retry_after
        #: What the platform does when a parent whose media dialog finished asks for another
        #: WEBSOCKET dialog is not published: by default the simulator allows it (the
        #: re-bridge after a lost gateway relies on it); True refuses it with 400, the
        #: other plausible behaviour (docs/protocol-assumptions.md, "Re-bridging").
        self.refuse_second_media_dialog = False
        self.ident = ident or Identity()
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        self.dialog_requests: list[RecordedRequest] = []
        self.media_stream_configs: dict[str, StoredConfig] = {}
        #: requests refused because the published spec rejects their body (400)
        self.invalid_requests: list[RecordedRequest] = []
        #: answers and webhooks of the simulator's own that the published spec rejects: each
        #: is a simulator bug (also raised where it happened); tests assert this stays empty
        self.spec_violations: list[str] = []  # shared with the webhook poster below
        self.calls: list[SimCall] = []
        self.parent_calls: dict[str, SimCall] = {}
        self.dialogs: dict[str, tuple[SimCall, DialogState]] = {}
        self._poster = WebhookPoster(webhook_url, webhook_auth, webhook_hmac_secret,
                                     attempts=webhook_attempts, backoff_s=webhook_backoff_s,
                                     timeout_s=webhook_timeout_s,
                                     hmac_scheme=webhook_hmac_scheme or WebhookHmacScheme())
        self._poster.spec_violations = self.spec_violations
        self._dialog_times: deque[float] = deque()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._runner = web.AppRunner(create_app(self, self.media_stream_configs), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # the bound port when port=0
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.port
        self.base_url = f"http://{self.host}:{self.port}"
        await self._poster.start()
        log.info("Infobip simulator listening on %s, webhooks to %s", self.base_url,
                 self.webhook_url or "(none)")

    async def stop(self) -> None:
        await asyncio.gather(*(call.abort() for call in self.calls), return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._poster.close()

    async def __aenter__(self) -> InfobipSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- configuration -------------------------------------------------------------------

    @property
    def webhook_url(self) -> str | None:
        return self._poster.url

    @webhook_url.setter
    def webhook_url(self, url: str | None) -> None:
        """Settable after start: the demo learns the ingress port late."""
        self._poster.url = url

    @property
    def webhooks(self) -> list[WebhookAttempt]:
        """Every delivery attempt: (event dict, HTTP status or exception text, unix time)."""
        return self._poster.records

    def add_media_stream_config(self, url: str, sample_rate: int | str = 8000,
                                name: str | None = None, config_id: str | None = None) -> str:
        """Same as `POST /calls/1/media-stream-configs`; returns the new config's id.

        `config_id` fixes the id (the real API assigns one): a deployment whose orchestrators
        were configured beforehand (compose.yaml's default) can then be demoed against."""
        body = {"type": "WEBSOCKET_ENDPOINT", "url": url, "name": name or f"callbridge {url}",
                "sampleRate": str(sample_rate)}
        problems = published_spec().request_problems("POST", CONFIG_PATH, body)
        result = (config_from_request(body, config_id or new_config_id()) if not problems
                  else {p.path: [p.message] for p in problems})
        if isinstance(result, dict):
            raise ValueError(f"invalid media-stream config: {result}")
        self.media_stream_configs[result.id] = result
        return result.id

    # --- calls ---------------------------------------------------------------------------

    async def place_call(self, script: CallScript | None = None) -> SimCall:
        """A caller rings: CALL_RECEIVED goes to the webhook; the rest follows the script."""
        if not self.base_url:
            raise RuntimeError("start() the simulator before placing calls")
        call = SimCall(script or CallScript(), self.ident, self.base_url, self._poster,
                       media_options=self.media_options)
        self.calls.append(call)
        self.parent_calls[call.call_id] = call
        call.start()
        log.info("placed call %s from %s to %s", call.call_id, call.script.from_number,
                 call.script.to_number)
        return call

    def call(self, call_id: str) -> SimCall | None:
        return self.parent_calls.get(call_id)

    def register_dialog(self, call: SimCall, dialog: DialogState) -> None:
        self.dialogs[dialog.id] = (call, dialog)

    def find_call(self, call_id: str) -> tuple[SimCall, CallState] | None:
        """The owning SimCall and the call leg (parent or any dialog's child) for an id."""
        owner = self.parent_calls.get(call_id)
        if owner is not None:
            return owner, owner.parent
        for owner, dialog in self.dialogs.values():
            if dialog.child.id == call_id:
                return owner, dialog.child
        return None

    def throttled(self, method: str, path: str, at: float) -> bool:
        """Throttle emulation: more than 20 dialog creations in the last second -> 429."""
        if not self.throttle or method != "POST" or path != DIALOGS_PATH:
            return False
        while self._dialog_times and self._dialog_times[0] <= at - 1.0:
            self._dialog_times.popleft()
        if len(self._dialog_times) >= DIALOG_RATE_PER_S:
            return True
        self._dialog_times.append(at)
        return False

    def summary(self) -> dict[str, Any]:
        """A small JSON-ready overview (the CLI logs it on exit)."""
        return {"calls": len(self.calls), "requests": len(self.requests),
                "dialog_requests": len(self.dialog_requests),
                "webhook_attempts": len(self.webhooks),
                "early_retries": len(self.faults.early_retries),
                "ended": {c.call_id: c.end_reason for c in self.calls},
                "at": time.time()}

    @property
    def early_retries(self) -> list[Any]:
        return self.faults.early_retries
