"""Posting call events to the subscribed webhook, as Infobip does: signed, retried, in order.

Infobip retries slow or failed deliveries (count and backoff *unverified*,
Infobip's Calls API reference (https://www.infobip.com/docs/api) "Webhooks"), so the ingress must
tolerate duplicates;
the simulator retries a connection error, a timeout, a 429 or a 5xx a bounded number of
times with exponential backoff, and records every attempt in `sim.webhooks`.
Security offered by Infobip subscriptions: HTTP Basic and HMAC; both are supported, alone or
together.

Every event is checked against the published spec's call event webhook schema when it is
emitted (`spec_validation`): an event the spec rejects is a simulator bug, recorded in
`spec_violations` and raised where the call produced it.

Signing is this module's own (`WebhookHmacScheme`, `sign_webhook`), deliberately NOT the
ingress's verifier (shared/webhook_signing.py): Infobip publishes no HMAC header format
(docs/protocol-assumptions.md, "Webhook HMAC header format"), so the simulator is told how
to sign by its own settings, and tests pairing it with the ingress compare two independent
implementations. A test scans this file's imports to keep it so.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import aiohttp
import orjson

from .spec_validation import SpecViolation, published_spec

log = logging.getLogger(__name__)


class WebhookAttempt(NamedTuple):
    """One delivery attempt: (event, HTTP status or exception text, unix time)."""

    event: dict[str, Any]
    result: int | str
    at: float


@dataclass(frozen=True)
class WebhookHmacScheme:
    """How the simulated subscription signs: which headers, what is signed (a template over
    `{timestamp}` and `{body}`), hex or base64, a prefix, the hashlib algorithm name.

    The defaults match callbridge's default ingress settings, so a stack started with only
    a secret works; they are spelled out here, not imported, on purpose (module docstring).
    """

    header: str = "X-Callbridge-Signature"
    timestamp_header: str | None = "X-Callbridge-Timestamp"   # None: no timestamp sent
    template: str = "{timestamp}.{body}"
    encoding: str = "hex"                                       # hex | base64
    prefix: str = "sha256="
    algorithm: str = "sha256"
    #: send the timestamp in milliseconds instead of seconds
    milliseconds: bool = False

    KEYS = ("header", "timestamp-header", "template", "encoding", "prefix", "algorithm",
            "milliseconds")

    @classmethod
    def parse(cls, items: Iterable[str]) -> WebhookHmacScheme:
        """From `KEY=VALUE` items (the CLI's repeated --webhook-hmac-scheme), keys as in
        KEYS; an empty timestamp-header or prefix means none. ValueError if malformed."""
        values: dict[str, object] = {}
        for item in items:
            key, sep, value = item.partition("=")
            key = key.strip().lower()
            if not sep or key not in cls.KEYS:
                raise ValueError(f"{item!r} is not KEY=VALUE with KEY one of "
                                 f"{', '.join(cls.KEYS)}")
            if key == "timestamp-header":
                values["timestamp_header"] = value.strip() or None
            elif key == "milliseconds":
                values["milliseconds"] = value.strip().lower() in ("1", "true", "yes")
            else:
                values[key] = value.strip() if key != "prefix" else value
        scheme = cls(**values)  # type: ignore[arg-type]
        scheme.check()
        return scheme

    def check(self) -> None:
        """ValueError unless this scheme can sign anything."""
        if self.encoding not in ("hex", "base64"):
            raise ValueError(f"encoding {self.encoding!r}: hex or base64")
        if self.algorithm not in hashlib.algorithms_available:
            raise ValueError(f"algorithm {self.algorithm!r} is not a hashlib algorithm")
        if self.template.count("{body}") != 1:
            raise ValueError(f"template {self.template!r} needs {{body}} exactly once")
        if "{timestamp}" in self.template and self.timestamp_header is None:
            raise ValueError(f"template {self.template!r} signs {{timestamp}} but no "
                             "timestamp-header is set")


def sign_webhook(secret: bytes, body: bytes, scheme: WebhookHmacScheme,
                 now: float | None = None) -> dict[str, str]:
    """The headers a subscription following `scheme` adds to a delivery of `body`."""
    when = time.time() if now is None else now
    stamp = str(int(when * 1000) if scheme.milliseconds else int(when))
    head, tail = scheme.template.split("{body}")
    message = (head.replace("{timestamp}", stamp).encode("utf-8") + body
               + tail.replace("{timestamp}", stamp).encode("utf-8"))
    digest = hmac.digest(secret, message, scheme.algorithm)
    encoded = (base64.b64encode(digest).decode("ascii") if scheme.encoding == "base64"
               else digest.hex())
    headers = {scheme.header: scheme.prefix + encoded}
    if scheme.timestamp_header is not None:
        headers[scheme.timestamp_header] = stamp
    return headers


@dataclass
class WebhookPoster:
    url: str | None
    auth: tuple[str, str] | None = None
    hmac_secret: bytes | None = None
    hmac_scheme: WebhookHmacScheme = field(default_factory=WebhookHmacScheme)
    attempts: int = 4
    backoff_s: float = 0.25
    timeout_s: float = 5.0
    records: list[WebhookAttempt] = field(default_factory=list)
    #: events of the simulator's own that the published spec rejects (simulator bugs)
    spec_violations: list[str] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"User-Agent": "callbridge-infobip-simulator"})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, event: dict[str, Any]) -> int | None:
        """Deliver one event; the final HTTP status (None when every attempt failed)."""
        if not self.url:
            return None
        await self.start()
        assert self._session is not None
        body = orjson.dumps(event)
        basic = aiohttp.encode_basic_auth(*self.auth) if self.auth else None
        status: int | None = None
        for attempt in range(self.attempts):
            headers = {"Content-Type": "application/json"}
            if basic is not None:
                headers["Authorization"] = basic
            if self.hmac_secret:
                # Signed per attempt, as a sender stamping the send time would.
                headers.update(sign_webhook(self.hmac_secret, body, self.hmac_scheme))
            try:
                async with self._session.post(self.url, data=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
                self.records.append(WebhookAttempt(event, status, time.time()))
                if status < 500 and status != 429:
                    return status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                status = None
                self.records.append(
                    WebhookAttempt(event, f"{type(exc).__name__}: {exc}", time.time()))
            if attempt + 1 < self.attempts:
                log.info("webhook %s attempt %d failed (%s), retrying", event.get("type"),
                         attempt + 1, self.records[-1].result)
                await asyncio.sleep(self.backoff_s * (2 ** attempt))
        log.warning("webhook %s not delivered after %d attempts", event.get("type"),
                    self.attempts)
        return status


class OrderedSender:
    """One call's events, delivered one after another in the order they happened, without
    blocking the call's flow (the platform does not wait for our webhook to answer)."""

    def __init__(self, poster: WebhookPoster,
                 on_delivered: Callable[[dict[str, Any], int | None], None] | None = None):
        self._poster = poster
        self._on_delivered = on_delivered
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def emit(self, event: dict[str, Any]) -> None:
        """Queue one event for delivery; raise SpecViolation if the spec rejects it."""
        try:
            published_spec().check_event(event)
        except SpecViolation as exc:
            self._poster.spec_violations.append(str(exc))
            log.error("simulator bug: %s", exc)
            raise
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="infobip-sim-webhooks")
        self._queue.put_nowait(event)

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                status = await self._poster.post(event)
                if self._on_delivered is not None:
                    self._on_delivered(event, status)
            except Exception:  # a bug here must not stop later events
                log.exception("webhook delivery crashed")
            finally:
                self._queue.task_done()

    async def flush(self, timeout: float) -> bool:
        """Wait until every emitted event was delivered (or given up on)."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
