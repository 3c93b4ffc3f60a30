"""Real-time pacing of every call's playout, and the synchronous frame writer.

One `PacerHub` task per process wakes every 5 ms and serves the calls whose next frame is
due, instead of one sleeping task per call: at hundreds of calls that is the difference
between hundreds of timer wake-ups per tick and one (measured with bench/gateway, README
"Benchmarks": a per-call 20 ms ticker cost a third of the CPU budget and added a frame of
delay).
The pacing rule itself is the pure `callbridge.shared.audio.playout.Playout`: one fixed 20 ms grid
per call from its first frame, which a burst of agent audio joins at its next slot (`Sender.kick`,
from the task that received the model's audio, sends at once only when a slot is already due, e.g.
the call's first frame). Hub ticks are only when the grid is looked at: a tick that wakes late
catches up the frames that came due, it never moves the call's grid.

Frames are written synchronously (`ws_fastpath.write_frame`), so sending never awaits: no
coroutine per frame and no call can stall the hub. A socket whose peer stopped reading
(write buffer above `WRITE_LIMIT`) loses frames instead of growing memory; its keep-alive ends it.

A stopped process (SIGSTOP, a frozen VM, a host that lost its CPU for a while) may come back
after the orchestrator re-bridged its callers to another gateway: it must not send them a
single frame. Every send passes the process-wide `SendGate`: when the hub's clock shows a gap
longer than STALL_HOLD_S since its last tick, the gate closes before anything is written, the
server checks each call's media generation in Redis, closes the fenced sessions and opens the
gate again (server.py). A gap that short never lets a re-bridge happen (the orchestrator waits a
full second without a heartbeat), so only the check's round trip is ever held.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from websockets.asyncio.connection import Connection
from websockets.protocol import State

from callbridge.services.media_gateway import metrics
from callbridge.services.media_gateway.send_gate import SendGate
from callbridge.services.media_gateway.ws_fastpath import write_frame
from callbridge.shared.audio.playout import Playout

log = logging.getLogger(__name__)

TICK_S = 0.005
WRITE_LIMIT = 64 * 1024
_MAX_FRAMES_PER_SERVICE = 3
class Sender:
    """Moves one call's `Playout` onto its Infobip socket; served by the hub."""

    __slots__ = ("_n", "_ready_t", "conn", "due", "gate", "idle_waiter", "on_first_audio",
                 "playout", "sample_every")

    def __init__(self, conn: Connection, playout: Playout, sample_every: int = 1,
                 on_first_audio: Callable[[], None] | None = None,
                 gate: SendGate | None = None) -> None:
        self.conn = conn
        self.gate = gate or SendGate()
        self.playout = playout
        self.sample_every = sample_every
        self.on_first_audio = on_first_audio
        self.due = float("-inf")
        self.idle_waiter: asyncio.Event | None = None
        self._ready_t = float("-inf")
        self._n = 0

    def service(self, now: float) -> None:
        """Send every frame due at `now` (normally one; a few after a stall). The hub checks
        the gate once per tick before serving anyone."""
        p = self.playout
        tally = metrics.FRAMES
        for _ in range(_MAX_FRAMES_PER_SERVICE):
            due = p.next_due()
            late_before = p.late_frames
            frame = p.pop_frame(now)
            if frame is None:
                break
            if not write_frame(self.conn, frame, limit=WRITE_LIMIT):
                if self.conn.protocol.state is State.OPEN:
                    metrics.DROPPED_FRAMES.inc()
                continue
            tally.count += 1
            tally.last_at = now
            if p.late_frames != late_before:
                metrics.LATE_FRAMES.inc()
            if p.last_was_audio:
                if self.on_first_audio is not None:
                    self.on_first_audio()
                    self.on_first_audio = None
                self._n += 1
                if self._n % self.sample_every == 0:
                    metrics.RELAY_LATENCY.labels("to_caller").observe(
                        max(0.0, now - max(due, self._ready_t)))
        self.due = p.next_due()
        waiter = self.idle_waiter
        if waiter is not None and not p.playing(now):
            waiter.set()

    def kick(self, now: float, received_at: float) -> None:
        """Audio arrived: send it now if its grid slot is already due, else the hub will."""
        self._ready_t = received_at
        self.due = self.playout.next_due()
        if self.due <= now and self.gate.allows(now):
            self._n = self.sample_every - 1  # always observe a burst start
            self.service(now)

    def send_text(self, text: bytes, now: float) -> bool:
        if not self.gate.allows(now):
            return False
        return write_frame(self.conn, text, text=True, limit=WRITE_LIMIT)


class PacerHub:
    """One task per process that serves every registered `Sender` when its frame is due."""

    def __init__(self, tick_s: float = TICK_S) -> None:
        self.tick_s = tick_s
        self.gate = SendGate()
        self._senders: set[Sender] = set()
        self._snapshot: tuple[Sender, ...] = ()
        self._task: asyncio.Task[None] | None = None

    def add(self, sender: Sender) -> None:
        self._senders.add(sender)
        self._snapshot = tuple(self._senders)

    def remove(self, sender: Sender) -> None:
        self._senders.discard(sender)
        self._snapshot = tuple(self._senders)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pacer-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wake = loop.time()
        observe_lag = metrics.LOOP_LAG.observe
        gate = self.gate
        gate.last_tick = wake
        while True:  # runs for the life of the process; cancelled by stop()
            now = loop.time()
            observe_lag(max(0.0, now - wake))  # how late this tick woke: event-loop health
            allowed = gate.allows(now)
            gate.last_tick = now
            for sender in self._snapshot if allowed else ():
                if sender.due <= now:
                    try:
                        sender.service(now)
                    except Exception:  # one broken call must not stop everyone's audio
                        log.exception("pacer: sending a frame failed")
                        self.remove(sender)
            wake += self.tick_s
            if wake < now:  # we fell behind (a busy loop): re-anchor rather than burst
                wake = now + self.tick_s
            await asyncio.sleep(wake - loop.time())
