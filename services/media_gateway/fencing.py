"""After a stall, which of this gateway's calls still belong to it.

The orchestrator re-bridges the callers of a gateway whose heartbeat stopped for a second
(services/call_orchestrator/rebridge.py): it moves each call to a newer media generation and
gives it a new media leg on another gateway. A process that was only stopped (SIGSTOP, a
frozen VM) wakes up still holding those calls' sockets. The pacer's `SendGate` closes the
moment it notices the gap (pacer.py); this reads every live call's generation in one round
trip, fences the sessions whose call has moved on (they end without another frame, job or
record write) and opens the gate for the rest. Redis writes are fenced independently
(state.py), so a write that slips through is refused there too.

If Redis cannot answer within FENCE_CHECK_TIMEOUT_S, the gate opens anyway: a call that was
re-bridged has had its old media leg hung up at Infobip, so at worst frames go to a closed
socket, while holding would silence calls that are still ours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from redis.exceptions import RedisError

from callbridge.services.media_gateway.send_gate import SendGate
from callbridge.services.media_gateway.state import StateStore

log = logging.getLogger(__name__)

FENCE_CHECK_TIMEOUT_S = 1.0


class Fenceable(Protocol):
    call_id: str
    generation: int

    def fence(self) -> None: ...


class FenceCheck:
    """Wired to the gate's `on_stall` and the store's `on_fenced` by the server."""

    def __init__(self, gate: SendGate, store: Callable[[], StateStore],
                 sessions: Callable[[], Iterable[Fenceable]]) -> None:
        self.gate = gate
        self._store = store
        self._sessions = sessions
        self._task: asyncio.Task[None] | None = None
        self.checks = 0

    def on_stall(self, gap: float) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._check(), name="fences")

    def on_fenced(self, call_id: str) -> None:
        """The store found a write refused: that call moved on."""
        for session in list(self._sessions()):
            if session.call_id == call_id:
                session.fence()

    async def _check(self) -> None:
        try:
            sessions = list(self._sessions())
            if sessions:
                current = await self._store().current_generations(
                    [s.call_id for s in sessions], timeout=FENCE_CHECK_TIMEOUT_S)
                fenced = [s for s in sessions if current.get(s.call_id, 0) > s.generation]
                for session in fenced:
                    session.fence()
                log.warning("after a stall: %d of %d call(s) had been re-bridged elsewhere "
                            "and were closed silently", len(fenced), len(sessions))
        except (RedisError, OSError, TimeoutError) as exc:
            log.error("after a stall, fences could not be checked (%s): resuming every call",
                      type(exc).__name__)
        finally:
            self.checks += 1
            self.gate.release()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
