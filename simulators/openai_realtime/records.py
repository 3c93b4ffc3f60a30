"""What the simulator saw on one connection, for tests, the demo and the fault suite.

Audio is summarised, never stored: consecutive `input_audio_buffer.append`s collapse into one
`received` entry with counts, and `response.output_audio.delta`s are recorded without their
payload, so 200 long calls stay cheap. `wait_for` lets a test await an event without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["sent", "received", "any"]
Match = str | Callable[[dict[str, Any]], bool]

APPEND = "input_audio_buffer.append"


@dataclass
class ResponseRecord:
    """One response: `status` in_progress|completed|cancelled; `audio_ms` generated."""

    id: str
    status: str = "in_progress"
    reason: str | None = None  # cancel reason: turn_detected | client_cancelled
    audio_ms: int = 0
    item_ids: list[str] = field(default_factory=list)
    transcript: str = ""
    tool_call: tuple[str, dict[str, Any]] | None = None
    #: the instructions the response ran with: `response.instructions` when the client set
    #: them (they replace the session's), else the session's at creation
    instructions: str | None = None
    instructions_source: Literal["response", "session"] = "session"
    created_at: float = field(default_factory=time.time)
    done_at: float | None = None


@dataclass
class _Waiter:
    pred: Callable[[dict[str, Any]], bool]
    direction: Direction
    remaining: int
    future: asyncio.Future[dict[str, Any]]


def _predicate(match: Match) -> Callable[[dict[str, Any]], bool]:
    if isinstance(match, str):
        return lambda evt: evt.get("type") == match
    return match


class SimSession:
    """One WebSocket connection as the simulator saw it (client and server events)."""

    def __init__(self, index: int, path: str, query: dict[str, str],
                 headers: dict[str, str]) -> None:
        self.index = index
        self.path = path
        self.query = query
        self.headers = headers  # lower-cased names; includes Authorization: never log them
        # `deployment=`: an Azure OpenAI Realtime URL of the preview form names the model so
        self.model: str | None = query.get("model") or query.get("deployment")
        self.session_id: str | None = None
        self.config: dict[str, Any] = {}  # the effective session (as in session.updated)
        self.received: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.session_updates: list[dict[str, Any]] = []  # `session` of each APPLIED update
        self.errors_sent: list[dict[str, Any]] = []  # the `error` objects
        self.truncates: list[dict[str, Any]] = []  # every attempt, ok or not
        self.truncate_errors: list[dict[str, Any]] = []
        self.cancels: list[dict[str, Any]] = []  # {"response_id", "reason", "at"}
        self.responses: list[ResponseRecord] = []
        self.appends = 0
        self.appended_bytes = 0
        self.appended_ms = 0.0
        self.handshake_error: str | None = None  # code when refused at the handshake
        self.closed_code: int | None = None
        self.closed_reason: str | None = None
        self.dropped = False  # drop_all(): TCP reset
        self.expired = False  # session_expired sent
        self.stalled = False
        self.connected_at = time.time()
        self.closed_at: float | None = None
        self._waiters: list[_Waiter] = []
        self._closed = asyncio.Event()

    # recording -----------------------------------------------------------------------------

    def record_received(self, evt: dict[str, Any]) -> None:
        self.received.append(evt)
        self._notify(evt, "received")

    def record_append(self, event_id: str | None, nbytes: int, ms: float) -> None:
        """Coalesce consecutive appends into one entry {count, bytes, ms} (order is kept)."""
        self.appends += 1
        self.appended_bytes += nbytes
        self.appended_ms += ms
        last = self.received[-1] if self.received else None
        if last is not None and last.get("type") == APPEND:
            last["count"] += 1
            last["bytes"] += nbytes
            last["ms"] += ms
        else:
            last = {"type": APPEND, "count": 1, "bytes": nbytes, "ms": ms}
            self.received.append(last)
        if self._waiters:
            self._notify({"type": APPEND, "event_id": event_id, "bytes": nbytes, "ms": ms},
                         "received")

    def record_sent(self, evt: dict[str, Any]) -> None:
        self.sent.append(evt)
        if evt.get("type") == "error":
            self.errors_sent.append(evt["error"])
        self._notify(evt, "sent")

    def record_closed(self, code: int | None, reason: str | None) -> None:
        if self.closed_at is None:
            self.closed_code = code
            self.closed_reason = reason
            self.closed_at = time.time()
        self._closed.set()
        for w in self._waiters:
            if not w.future.done():
                w.future.set_exception(ConnectionError(
                    f"session {self.index} closed (code {code}) before the awaited event"))

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    # waiting -------------------------------------------------------------------------------

    def events(self, direction: Direction = "any") -> list[dict[str, Any]]:
        if direction == "sent":
            return list(self.sent)
        if direction == "received":
            return list(self.received)
        return self.received + self.sent

    def types_sent(self) -> list[str]:
        return [e["type"] for e in self.sent]

    async def wait_for(self, match: Match, timeout: float = 10.0, *,
                       direction: Direction = "any", nth: int = 1) -> dict[str, Any]:
        """The `nth` event (sent or received) that has `match` as type or satisfies it.

        Events already recorded count. Raises TimeoutError after `timeout` seconds and
        ConnectionError if the connection closes first.
        """
        pred = _predicate(match)
        remaining = nth
        history = (self.sent if direction == "sent" else self.received
                   if direction == "received" else self.received + self.sent)
        for evt in history:
            if pred(evt):
                remaining -= 1
                if remaining == 0:
                    return evt
        if self.is_closed:
            raise ConnectionError(f"session {self.index} is closed (code {self.closed_code})")
        waiter = _Waiter(pred, direction, remaining, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter.future, timeout)
        finally:
            self._waiters.remove(waiter)

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        await asyncio.wait_for(self._closed.wait(), timeout)
        return self.closed_code

    def _notify(self, evt: dict[str, Any], direction: Direction) -> None:
        for w in self._waiters:
            if w.future.done() or w.direction not in ("any", direction):
                continue
            try:
                hit = w.pred(evt)
            except Exception as exc:  # a broken predicate fails its own wait, not the sim
                w.future.set_exception(exc)
                continue
            if hit:
                w.remaining -= 1
                if w.remaining == 0:
                    w.future.set_result(evt)

    def __repr__(self) -> str:
        return (f"SimSession(index={self.index}, model={self.model!r}, "
                f"received={len(self.received)}, sent={len(self.sent)}, "
                f"closed_code={self.closed_code})")
