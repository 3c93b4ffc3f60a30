"""The OpenAI Realtime socket of one call: connect, configure, buffer, reconnect, re-seed.

Protocol: ../shared/reference/openai-realtime.md. GA only: `Authorization: Bearer` and no
`OpenAI-Beta` header; `session.update` with `type: realtime` built by
`shared.realtime_events.session_config`; `event_id` on client events. A session ends at 60
minutes with `error` code `session_expired` and close 1001, and a socket can drop without a
close frame: there is no resume, so a new socket gets `session.update` again plus the
conversation so far as text items ("re-seed"), and a `response.create` so the agent picks up.
Closes 3000 (auth) and 4000 (beta header / bad model) are configuration errors: retrying
cannot help, so they fail at once.

Caller audio that arrives while no socket is ready (opening, reconnecting) is buffered, not
dropped (../shared/perf-notes.md), up to `pending_audio_ms`; oldest first out.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from services.media_gateway import metrics
from services.media_gateway.config import GatewaySettings
from services.media_gateway.ws_fastpath import write_frame
from shared import realtime_events as rt
from shared.profiles import AgentProfile

log = logging.getLogger(__name__)

#: Close codes after which reconnecting is pointless (reference: "The beta interface...").
FATAL_CLOSE_CODES = frozenset({3000, 4000})
_BACKOFF_S = (0.0, 0.2, 0.4, 0.8, 1.6, 2.0)
_APPEND_HEAD = b'{"type":"input_audio_buffer.append","audio":"'
_APPEND_TAIL = b'"}'
_MODEL_WRITE_LIMIT = 1024 * 1024
_PENDING_CHUNK = 24000 * 2 // 2  # flush buffered audio in 500 ms appends
_RESEED_LINES = 30
RESUME_INSTRUCTIONS = (
    "The phone line to you dropped for a moment and is back; the caller heard a hold tone. "
    "Continue naturally: if the caller's last request is unanswered, answer it now; otherwise "
    "say briefly that you are back and ask how you can help further."
)

EventHandler = Callable[[bytes, float], None]
SESSION_UPDATED = "session.updated"


def append_event(pcm24: bytes) -> bytes:
    """`input_audio_buffer.append` as bytes, built without a dict or a JSON encoder: this is
    50 events a second per call (same shape as `shared.realtime_events.input_audio_append`)."""
    return _APPEND_HEAD + base64.b64encode(pcm24) + _APPEND_TAIL


class ModelLink:
    """One call's model socket across reconnects."""

    def __init__(self, settings: GatewaySettings, profile: AgentProfile,
                 tools: list[dict[str, Any]], history: Callable[[], Sequence[tuple[str, str]]]
                 ) -> None:
        self.settings = settings
        self.profile = profile
        self.tools = tools
        self._history = history
        self.ws: ClientConnection | None = None
        self.ready = False
        self.muted = False
        self.closing = False
        self.connects = 0
        self.last_close_code: int | None = None
        self._pending = bytearray()
        self._pending_cap = settings.pending_audio_ms * 48  # 24 kHz, 16-bit

    @property
    def url(self) -> str:
        base = self.settings.openai_realtime_url
        sep = "&" if "?" in base else "?"
        return f"{base}{sep}model={self.settings.openai_model}"

    # Sending -----------------------------------------------------------------------------

    def send_audio(self, pcm24: bytes) -> bool:
        """Forward caller audio (24 kHz); buffered while the socket is not ready."""
        if self.muted or not pcm24:
            return False
        ws = self.ws
        if self.ready and ws is not None:
            if write_frame(ws, append_event(pcm24), text=True, limit=_MODEL_WRITE_LIMIT):
                return True
        self._pending += pcm24
        excess = len(self._pending) - self._pending_cap
        if excess > 0:
            del self._pending[:excess + (excess & 1)]
        return False

    def send(self, event: dict[str, Any]) -> bool:
        """Send a control event now (dropped, and logged, if no socket is ready)."""
        ws = self.ws
        if not self.ready or ws is None:
            log.info("model not ready: dropped %s", event.get("type"))
            return False
        return write_frame(ws, orjson.dumps(event), text=True, limit=_MODEL_WRITE_LIMIT)

    # Connecting --------------------------------------------------------------------------

    async def open(self, *, first: bool) -> None:
        """Open a socket and configure it; raises on failure (the caller retries)."""
        s = self.settings
        ws = await connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {s.openai_api_key.get_secret_value()}"},
            compression=None,  # PCM in base64 barely compresses; deflate costs CPU and memory
            max_size=s.model_max_message_bytes,
            open_timeout=s.model_open_timeout_s,
            ping_interval=20, ping_timeout=20,  # reference: the server pings ~20 s when idle
            close_timeout=2,
        )
        self.connects += 1
        try:
            await self._configure(ws, first)
        except BaseException:
            ws.transport.abort()  # never leak a half-configured socket
            raise
        self.ws = ws
        self.ready = True

    async def _configure(self, ws: ClientConnection, first: bool) -> None:
        events: list[dict[str, Any]] = [
            rt.session_update(rt.session_config(self.profile, self.settings.openai_model,
                                                self.tools))]
        if first:
            if self.profile.greeting:  # the agent speaks first
                events.append(rt.response_create(self.profile.greeting))
        else:
            lines = [(r, t) for r, t in self._history() if r in ("agent", "caller")]
            for role, text in lines[-_RESEED_LINES:]:
                events.append(rt.text_item("assistant" if role == "agent" else "user", text))
            events.append(rt.response_create(RESUME_INSTRUCTIONS))
        for event in events:
            await ws.send(rt.dumps(event))
        # Caller audio buffered while we were away, oldest first; removed only once sent.
        for _ in range(10_000):  # bounded: the buffer holds at most pending_audio_ms
            if not self._pending:
                break
            chunk = bytes(self._pending[:_PENDING_CHUNK])
            await ws.send(append_event(chunk), text=True)
            del self._pending[:len(chunk)]

    async def open_with_retry(self, deadline: float, *, first: bool,
                              on_failure: Callable[[], None] | None = None) -> bool:
        """Try until `deadline` (loop time) with backoff; True once a socket is ready.
        `on_failure` runs once, after the first failed attempt (starts the hold sound)."""
        loop = asyncio.get_running_loop()
        for attempt in range(1000):  # bounded by the deadline long before the count
            if self.closing or loop.time() >= deadline:
                return False
            try:
                await self.open(first=first)
                return True
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI,
                    ConnectionClosed) as exc:
                log.warning("model connect attempt %d failed: %s", attempt + 1,
                            type(exc).__name__)
                if isinstance(exc, ConnectionClosed) and exc.rcvd is not None:
                    self.last_close_code = exc.rcvd.code
                    if exc.rcvd.code in FATAL_CLOSE_CODES:
                        log.error("model refused us with close %s (%s): not retrying",
                                  exc.rcvd.code, exc.rcvd.reason)
                        return False
                if on_failure is not None:
                    on_failure()
                    on_failure = None
            delay = _BACKOFF_S[min(attempt + 1, len(_BACKOFF_S) - 1)]
            delay = min(delay * (0.8 + 0.4 * random.random()), max(0.0, deadline - loop.time()))
            await asyncio.sleep(delay)  # backoff between attempts, not synchronisation
        return False

    async def run(self, on_event: EventHandler, on_lost: Callable[[], None],
                  on_open: Callable[[bool], None]) -> bool:
        """Read the model until `close()`; reconnect and re-seed after a drop.

        Returns False when the model could not be (re)gained within
        MODEL_RECONNECT_TIMEOUT_S or closed with a fatal code: the session then plays its
        fallback. `on_event(raw, received_at)` runs for every server event, synchronously;
        `on_open(first)` after each socket is configured, `on_lost()` when one is lost.

        A socket counts as recovered only once the server confirmed our configuration
        (`session.updated`): a server that accepts the upgrade and closes at once must not
        restart the reconnect deadline forever.
        """
        loop = asyncio.get_running_loop()
        timeout = self.settings.model_reconnect_timeout_s
        first = True  # until a socket was healthy: greeting, not re-seed
        lost_since = loop.time()
        while not self.closing:  # one turn per socket; a missed deadline returns
            if self.ws is None:
                if not await self.open_with_retry(lost_since + timeout, first=first,
                                                  on_failure=on_lost if first else None):
                    if not first:
                        metrics.RECONNECTS.labels("failed").inc()
                    return self.closing
                on_open(first)
            ws = self.ws
            assert ws is not None
            healthy = False
            try:
                while True:
                    raw = await ws.recv(decode=False)
                    data = raw if isinstance(raw, bytes) else raw.encode()
                    if not healthy and rt.peek_type(data) == SESSION_UPDATED:
                        healthy = True
                        if not first:
                            metrics.RECONNECTS.labels("ok").inc()
                            log.info("model reconnected and re-seeded")
                        first = False
                    on_event(data, loop.time())
            except ConnectionClosed as exc:
                self.last_close_code = exc.rcvd.code if exc.rcvd else None
            self.ws = None
            self.ready = False
            if self.closing:
                return True
            if self.last_close_code in FATAL_CLOSE_CODES:
                log.error("model closed with %s: not retrying", self.last_close_code)
                return False
            if healthy:
                lost_since = loop.time()
            log.warning("model socket lost (close code %s); reconnecting", self.last_close_code)
            on_lost()
        return True

    async def close(self) -> None:
        self.closing = True
        self.ready = False
        ws, self.ws = self.ws, None
        if ws is not None:
            await ws.close()
