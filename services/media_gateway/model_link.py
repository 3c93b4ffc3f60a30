"""The OpenAI Realtime socket of one call: connect, configure, buffer, reconnect, re-seed.

Protocol: https://platform.openai.com/docs/guides/realtime-websocket and the API reference,
https://platform.openai.com/docs/api-reference/realtime. GA only: `Authorization: Bearer` and no
`OpenAI-Beta` header; `session.update` with `type: realtime` built by
`callbridge.shared.realtime_events.session_config`; `event_id` on client events. A session ends at
60 minutes with `error` code `session_expired` and close 1001, and a socket can drop without a close
frame: there is no resume, so a new socket gets `session.update` again plus the conversation so far
as text items ("re-seed"), and a `response.create` so the agent picks up. Only the close codes the
openai-python SDK's own reconnect policy treats as recoverable are retried
(`RETRYABLE_CLOSE_CODES`); any other code (3000 auth, 4000 beta header / bad model, 1000, 1008, ...)
is fatal at once and logged with its code and reason.

The first `response.create` on a socket (the greeting, or the resume after a reconnect) is
sent only once the server confirmed our `session.update` with `session.updated`; an `error`
naming the update's `event_id` instead means the server discarded the whole configuration and
would run the call on its defaults (no persona, no tools): the link gives up and the session
ends the call through its model-failure path (spoken fallback, transfer or hang-up).
Its `instructions` are the profile's followed by the greeting/resume directive, because
`response.instructions` *replace* the session's for that response (SDK docstring of
`ResponseCreateEvent`, https://github.com/openai/openai-python/blob/main/src/openai/types/
realtime/response_create_event.py); a directive alone would speak without the persona.

Caller audio that arrives while no socket is ready (opening, reconnecting) is buffered, not
dropped (README "Architecture", "Audio path"), up to `pending_audio_ms`; oldest first out.
Close codes: docs/protocol-assumptions.md, "OpenAI Realtime" / "Close codes".

Failover (model_endpoints.py): with OPENAI_SECONDARY_REALTIME_URL set, a call whose primary
stays unreachable past GATEWAY_MODEL_RECONNECT_TIMEOUT_S, or refuses it with a fatal close
code, moves to the secondary (same GA protocol; its own URL, key and auth header: Azure OpenAI
takes `api-key`), which gets its own window of the same length and the same re-seed as a
reconnect; only when that fails too does the session play its spoken fallback. A call stays
on the secondary for good: later drops reconnect there, since flapping back to an endpoint
that just failed would cost the caller another window of hold sound.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from prometheus_client import Counter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from callbridge.services.media_gateway import metrics
from callbridge.services.media_gateway.config import GatewaySettings
from callbridge.services.media_gateway.model_endpoints import ModelEndpoint, model_endpoints
from callbridge.services.media_gateway.ws_fastpath import write_frame
from callbridge.shared import realtime_events as rt
from callbridge.shared import ws_close_codes as close
from callbridge.shared.profiles import AgentProfile

log = logging.getLogger(__name__)

#: Close codes after which a new socket may succeed: exactly the openai-python SDK's
#: `_RECOVERABLE_CLOSE_CODES` (src/openai/types/websocket_reconnection.py, after RFC 6455
#: section 7.4.1): going away (the 60-minute `session_expired` closes with it), no status,
#: abnormal closure (a drop without a close frame), internal error, service restart, try
#: again later, TLS failure. Every other code is fatal: 3000 (bad key) and 4000 (beta
#: header, bad model) say so explicitly; 1000/1008/... mean the server ended us on purpose.
RETRYABLE_CLOSE_CODES = frozenset({
    close.GOING_AWAY, close.NO_STATUS_RCVD, close.ABNORMAL_CLOSURE, close.INTERNAL_ERROR,
    close.SERVICE_RESTART, close.TRY_AGAIN_LATER, close.TLS_HANDSHAKE})
#: A socket lost without a close frame reports no code: the same as 1006.
ABNORMAL_CLOSURE = close.ABNORMAL_CLOSURE
_BACKOFF_S = (0.0, 0.2, 0.4, 0.8, 1.6, 2.0)
_APPEND_HEAD = b'{"type":"' + rt.INPUT_AUDIO_APPEND.encode() + b'","audio":"'
_APPEND_TAIL = b'"}'
_MODEL_WRITE_LIMIT = 1024 * 1024
_PENDING_CHUNK = rt.MODEL_BYTES_PER_MS * 500  # flush buffered audio in 500 ms appends
_RESEED_LINES = 30
RESUME_INSTRUCTIONS = (
    "The phone line to you dropped for a moment and is back; the caller heard a hold tone. "
    "Continue naturally: if the caller's last request is unanswered, answer it now; otherwise "
    "say briefly that you are back and ask how you can help further."
)

EventHandler = Callable[[bytes, float], None]
SESSION_UPDATED = rt.SESSION_UPDATED
ACTIVE_RESPONSE_ERROR = rt.ACTIVE_RESPONSE_ERROR
_HELD_CONTROL_MAX = 32  # control events kept while a socket awaits session.updated
_REMEMBERED_CREATES = 8  # response.create events kept for a retry after an active-response error

#: Defined here rather than in metrics.py, which this change does not own; same namespace.
CONFIG_REJECTED = Counter(
    "callbridge_gateway_model_config_rejected_total",
    "session.update refused by the model (error naming its event_id): the call is ended "
    "instead of running on the server's default session")
#: A call moving to OPENAI_SECONDARY_REALTIME_URL: `ok` once the secondary confirmed the
#: session (re-seeded), `failed` when it could not be had either (the spoken fallback follows).
FAILOVERS = Counter(
    "callbridge_gateway_model_failovers_total",
    "calls moved mid-call from the primary Realtime endpoint to the secondary", ["outcome"])
for _outcome in ("ok", "failed"):
    FAILOVERS.labels(_outcome)  # exported as 0 before the first failover


def is_retryable_close(code: int | None) -> bool:
    """True when a socket closed with `code` (None: no close frame) is worth reopening."""
    return (ABNORMAL_CLOSURE if code is None else code) in RETRYABLE_CLOSE_CODES


def with_profile_instructions(profile_instructions: str, directive: str) -> str:
    """`response.instructions` that keep the persona: the profile's text, then the directive.

    `response.instructions` replace the session's instructions for that one response, so a
    bare directive ("greet the caller") would speak with no persona, language or tool
    guidance. Repeating the profile keeps the directive scoped to this response; a system
    item instead would stay in the conversation and keep saying "greet" on later turns."""
    if not profile_instructions:
        return directive
    return f"{profile_instructions}\n\n{directive}"


def append_event(pcm24: bytes) -> bytes:
    """`input_audio_buffer.append` as bytes, built without a dict or a JSON encoder: this is
    50 events a second per call (same shape as
    `callbridge.shared.realtime_events.input_audio_append`)."""
    return _APPEND_HEAD + base64.b64encode(pcm24) + _APPEND_TAIL


class ModelLink:
    """One call's model socket across reconnects."""

    def __init__(self, settings: GatewaySettings, profile: AgentProfile,
                 tools: list[dict[str, Any]], history: Callable[[], Sequence[tuple[str, str]]],
                 *, resume: bool = False) -> None:
        self.settings = settings
        self.profile = profile
        self.tools = tools
        self._history = history
        #: the primary, then the secondary if configured; `_active` indexes the one in use
        self.endpoints: tuple[ModelEndpoint, ...] = model_endpoints(settings)
        self._active = 0
        #: a call taken over from a lost gateway: even the first socket is re-seeded with
        #: the conversation so far and resumes it, instead of greeting the caller again
        self.resume = resume
        self.ws: ClientConnection | None = None
        self.ready = False
        self.muted = False
        self.closing = False
        self.connects = 0
        self.last_close_code: int | None = None
        self.last_close_reason: str = ""
        #: set when the model refused our session.update: the call must not go on
        self.config_rejected = False
        self._config_event_id: str | None = None
        #: the greeting/resume response.create, sent once session.updated confirmed the config
        self._first_response: dict[str, Any] | None = None
        #: response.create events we sent, by event_id, to retry one the server refused
        #: because a response was active (its own VAD turn raced ours)
        self._sent_creates: dict[str, dict[str, Any]] = {}
        self._retry_create: dict[str, Any] | None = None
        self._creates_sent = 0
        #: function-call events held until their response's `response.done` tells whether
        #: it completed: a cancelled, failed or incomplete response must not run tools
        self._held_calls: dict[str, list[bytes]] = {}
        #: control events sent while the socket awaits session.updated
        self._held_control: list[dict[str, Any]] = []
        self._pending = bytearray()
        self._pending_cap = settings.gateway_pending_audio_ms * rt.MODEL_BYTES_PER_MS

    @property
    def endpoint(self) -> ModelEndpoint:
        """The endpoint this call's sockets go to now (the primary until a failover)."""
        return self.endpoints[self._active]

    @property
    def url(self) -> str:
        return self.endpoint.url

    @property
    def failed_over(self) -> bool:
        return self._active > 0

    def _can_fail_over(self) -> bool:
        return self._active + 1 < len(self.endpoints)

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
        if ws is not None and not self.ready and len(self._held_control) < _HELD_CONTROL_MAX:
            self._held_control.append(event)  # configuring: sent after session.updated
            return True
        if not self.ready or ws is None:
            log.info("model not ready: dropped %s", event.get("type"))
            return False
        if event.get("type") == rt.RESPONSE_CREATE:
            self._remember_create(event)
        return write_frame(ws, orjson.dumps(event), text=True, limit=_MODEL_WRITE_LIMIT)

    def _remember_create(self, event: dict[str, Any]) -> None:
        self._creates_sent += 1
        event_id = event.get("event_id")
        if isinstance(event_id, str):
            self._sent_creates[event_id] = event
            while len(self._sent_creates) > _REMEMBERED_CREATES:
                del self._sent_creates[next(iter(self._sent_creates))]

    # Connecting --------------------------------------------------------------------------

    async def open(self, *, first: bool) -> None:
        """Open a socket and configure it; raises on failure (the caller retries)."""
        s = self.settings
        endpoint = self.endpoint
        ws = await connect(
            endpoint.url,
            additional_headers=endpoint.headers(),  # this endpoint's own key, nobody else's
            compression=None,  # PCM in base64 barely compresses; deflate costs CPU and memory
            max_size=s.gateway_model_max_message_bytes,
            open_timeout=s.gateway_model_open_timeout_s,
            ping_interval=20, ping_timeout=20,  # reference: the server pings ~20 s when idle
            close_timeout=2,
        )
        self.connects += 1
        try:
            await self._configure(ws, first)
        except BaseException:
            ws.transport.abort()  # never leak a half-configured socket
            raise
        self.ws = ws  # `ready` only once the server confirmed the configuration (run())

    async def _configure(self, ws: ClientConnection, first: bool) -> None:
        update = rt.session_update(rt.session_config(self.profile, self.endpoint.model,
                                                     self.tools))
        self._config_event_id = update["event_id"]
        events: list[dict[str, Any]] = [update]
        self._first_response = None
        if first and not self.resume:
            if self.profile.greeting:  # the agent speaks first
                self._first_response = rt.response_create(
                    with_profile_instructions(self.profile.instructions, self.profile.greeting))
        else:
            lines = [(r, t) for r, t in self._history() if r in ("agent", "caller")]
            for role, text in lines[-_RESEED_LINES:]:
                events.append(rt.text_item("assistant" if role == "agent" else "user", text))
            self._first_response = rt.response_create(
                with_profile_instructions(self.profile.instructions, RESUME_INSTRUCTIONS))
        for event in events:
            await ws.send(rt.dumps(event))

    async def _confirmed(self, ws: ClientConnection) -> None:
        """`session.updated` arrived: the greeting/resume response first, then the caller
        audio and control events held meanwhile, then live relaying. Nothing of the caller
        reaches a session whose configuration might still be refused."""
        event, self._first_response = self._first_response, None
        if event is not None:
            self._remember_create(event)
            await ws.send(rt.dumps(event))
        # Caller audio buffered while we were away, oldest first; removed only once sent.
        for _ in range(10_000):  # bounded: the buffer holds at most pending_audio_ms
            if not self._pending:
                break
            chunk = bytes(self._pending[:_PENDING_CHUNK])
            await ws.send(append_event(chunk), text=True)
            del self._pending[:len(chunk)]
        held, self._held_control = self._held_control, []
        for control in held:
            if control.get("type") == rt.RESPONSE_CREATE:
                self._remember_create(control)
            await ws.send(rt.dumps(control))
        self.ready = True

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
                log.warning("model connect attempt %d to the %s endpoint failed: %s",
                            attempt + 1, self.endpoint.role, type(exc).__name__)
                if isinstance(exc, ConnectionClosed):
                    self._note_close(exc)
                    if not is_retryable_close(self.last_close_code):
                        log.error("model refused us with close %s (%s): not retrying",
                                  self.last_close_code, self.last_close_reason)
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
        GATEWAY_MODEL_RECONNECT_TIMEOUT_S or closed with a fatal code, on the secondary endpoint
        too when one is configured (then after its own window): the session then plays its
        fallback. `on_event(raw, received_at)` runs for every server event, synchronously;
        `on_open(first)` after each socket is configured, `on_lost()` when one is lost (and
        once when the first socket cannot be opened at once: the hold sound).

        A socket counts as recovered only once the server confirmed our configuration
        (`session.updated`): a server that accepts the upgrade and closes at once must not
        restart the reconnect deadline forever.
        """
        loop = asyncio.get_running_loop()
        timeout = self.settings.gateway_model_reconnect_timeout_s
        first = True  # until a socket was healthy: greeting, not re-seed
        lost_since = loop.time()
        signalled = False  # on_lost() ran since the last on_open(): the hold sound is on
        failing_over = False  # moved to the next endpoint; not yet confirmed there

        def lost() -> None:
            nonlocal signalled
            signalled = True
            on_lost()

        while not self.closing:  # one turn per socket; a missed deadline returns
            if self.ws is None:
                opened = await self.open_with_retry(
                    lost_since + timeout, first=first,
                    on_failure=lost if first and not signalled else None)
                if not opened:
                    if self.closing:
                        return True
                    if self._can_fail_over():
                        if not signalled:  # refused at once, say: hold while we move
                            lost()
                        lost_since = loop.time()  # the secondary gets its own window
                        self._fail_over(f"unreachable for {timeout:g} s"
                                        if self.last_close_code is None or is_retryable_close(
                                            self.last_close_code)
                                        else f"refused us with close {self.last_close_code}")
                        failing_over = True
                        continue
                    if failing_over:
                        FAILOVERS.labels("failed").inc()
                        log.error("model failover to %s failed: no endpoint left",
                                  self.endpoint.describe())
                    if not first:
                        metrics.RECONNECTS.labels("failed").inc()
                    return self.closing
                signalled = False
                on_open(first)  # stops the hold sound
            ws = self.ws
            assert ws is not None
            healthy = False
            self._held_calls.clear()
            self._retry_create = None
            try:
                while True:
                    raw = await ws.recv(decode=False)
                    data = raw if isinstance(raw, bytes) else raw.encode()
                    kind = rt.peek_type(data)
                    if not healthy:
                        if kind == SESSION_UPDATED:
                            healthy = True
                            if failing_over:
                                failing_over = False
                                FAILOVERS.labels("ok").inc()
                                log.warning("model failed over: the call now runs on %s%s",
                                            self.endpoint.describe(),
                                            "" if first else ", re-seeded")
                            if not first:
                                metrics.RECONNECTS.labels("ok").inc()
                                log.info("model reconnected and re-seeded")
                            first = False
                            on_event(data, loop.time())
                            await self._confirmed(ws)
                            continue
                        if kind == rt.ERROR and self._rejects_config(data):
                            on_event(data, loop.time())  # counted and logged like any error
                            self.config_rejected = True
                            CONFIG_REJECTED.inc()
                            if failing_over:
                                FAILOVERS.labels("failed").inc()
                            await self._abandon(ws)
                            return False
                    if kind == rt.FUNCTION_CALL_DONE and self._hold_call(data):
                        continue
                    if kind == rt.RESPONSE_DONE:
                        self._on_response_done(data, loop.time(), on_event)
                        continue
                    if kind == rt.ERROR:
                        self._note_active_response_refusal(data)
                    on_event(data, loop.time())
            except ConnectionClosed as exc:
                self._note_close(exc)
            self.ws = None
            self.ready = False
            # What this socket held dies with it: the re-seed carries the conversation.
            self._held_control.clear()
            self._first_response = None
            if self.closing:
                return True
            if healthy:
                lost_since = loop.time()
            if not is_retryable_close(self.last_close_code):
                log.error("model closed with %s (%s): not retrying %s", self.last_close_code,
                          self.last_close_reason or "no reason", self.endpoint.describe())
                if not self._can_fail_over():
                    if failing_over:
                        FAILOVERS.labels("failed").inc()
                    return False
                lost_since = loop.time()
                self._fail_over(f"closed with {self.last_close_code}")
                failing_over = True
            else:
                log.warning("model socket lost (close code %s); reconnecting to %s",
                            self.last_close_code, self.endpoint.describe())
            if not signalled:
                lost()
        return True

    def _fail_over(self, why: str) -> None:
        """Move this call to the next endpoint; its sockets go there from now on. The log
        names both endpoints by role and redacted URL, never by key."""
        previous = self.endpoint
        self._active += 1
        log.warning("model %s %s: failing over to %s", previous.describe(), why,
                    self.endpoint.describe())

    def _note_close(self, exc: ConnectionClosed) -> None:
        self.last_close_code = exc.rcvd.code if exc.rcvd is not None else None
        self.last_close_reason = exc.rcvd.reason if exc.rcvd is not None else ""

    def _rejects_config(self, data: bytes) -> bool:
        """An `error` naming our session.update: the server discarded the whole update."""
        try:
            err = rt.ErrorEvent.model_validate_json(data).error
        except ValueError:
            return False
        if err.event_id is None or err.event_id != self._config_event_id:
            return False
        log.error("model rejected our session.update: %s: %s (param=%s); ending the call "
                  "rather than running on the server's defaults", err.code, err.message,
                  err.param)
        return True

    async def _abandon(self, ws: ClientConnection) -> None:
        self.ready = False
        self.ws = None
        await ws.close()

    def _hold_call(self, data: bytes) -> bool:
        """Keep a function call until its response is done; False if it cannot be held."""
        try:
            response_id = orjson.loads(data).get("response_id")
        except (orjson.JSONDecodeError, AttributeError):
            return False
        if not isinstance(response_id, str):
            return False
        self._held_calls.setdefault(response_id, []).append(data)
        return True

    def _on_response_done(self, data: bytes, at: float, on_event: EventHandler) -> None:
        """Release held tool calls of a `completed` response, drop the others' (reference
        "Function calling": run tools only for a response that was not cancelled; `failed`
        and `incomplete` responses did not finish either), then retry a response.create
        the server refused while this response was active."""
        try:
            response = orjson.loads(data).get("response") or {}
            response_id, status = response.get("id"), response.get("status")
        except (orjson.JSONDecodeError, AttributeError):
            response_id, status = None, None
        held = self._held_calls.pop(response_id, []) if isinstance(response_id, str) else []
        if status == "completed":
            for call in held:
                on_event(call, at)
        elif held:
            log.info("response %s ended %s: its %d tool call(s) are not run", response_id,
                     status, len(held))
        sent_before = self._creates_sent
        on_event(data, at)
        retry, self._retry_create = self._retry_create, None
        if retry is not None and self._creates_sent == sent_before:
            log.info("retrying response.create %s refused during an active response",
                     retry.get("event_id"))
            self.send(retry)

    def _note_active_response_refusal(self, data: bytes) -> None:
        """Our response.create refused because the server's own response was active: keep it
        for after that response (the error is benign, the request must not be lost)."""
        try:
            err = rt.ErrorEvent.model_validate_json(data).error
        except ValueError:
            return
        if err.code == ACTIVE_RESPONSE_ERROR and err.event_id in self._sent_creates:
            self._retry_create = self._sent_creates[err.event_id]

    async def close(self) -> None:
        self.closing = True
        self.ready = False
        ws, self.ws = self.ws, None
        if ws is not None:
            await ws.close()
