"""The Infobip side of one media WebSocket: the caller's ear and mouth.

Protocol (source: Infobip's Calls API reference (https://www.infobip.com/docs/api), "Media stream
WebSocket"): Infobip connects to the gateway, sends the text frame `{"event": "websocket:connected",
"content-type": "audio/l16;rate=<rate>", <customData flattened>}`, then both sides exchange
binary frames of 16-bit little-endian mono PCM, 20 ms each, and Infobip honours the text
`{"action": "clear"}`. The sender keeps a steady 20 ms stream (silence when the caller says
nothing) on an absolute schedule, so pacing never drifts. Usable standalone by gateway
tests; `SimCall` drives one per WEBSOCKET dialog.

`MediaLegOptions` can break, one at a time, the assumptions docs/protocol-assumptions.md
lists for this socket (customData nested instead of flattened, no pong replies, no frames
while the caller is silent), so `callbridge preflight --capture-call` is seen to report them.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode

from callbridge.shared.pcm import is_silent

from .media_messages import FRAME_MS, connected_message, dtmf_message, frame_bytes, is_clear
from .playout import Drop, Playout

log = logging.getLogger(__name__)

#: A gap between received frames above this counts as late (two frame periods).
LATE_GAP_MS = 40.0
#: Seconds the platform waits for the gateway's close frame before dropping the connection.
CLOSE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class MediaLegOptions:
    """How this platform's media client departs from the assumed protocol (defaults: not)."""

    #: "flat": customData keys at the top level of `websocket:connected` (the assumption);
    #: "nested": under a `customData` object.
    custom_data: Literal["flat", "nested"] = "flat"
    #: False: WebSocket pings from the gateway get no pong (RFC 6455 5.5.2 says they must).
    answer_pings: bool = True
    #: True: no frame is sent while the caller is silent (instead of 20 ms of silence).
    silence_suppression: bool = False


class _PongWithholdingProtocol(ClientProtocol):
    """websockets answers every ping inside its Sans-I/O protocol (`recv_frame` queues the
    pong itself) and has no option to switch that off. Our client never sends a pong of its
    own, so dropping every outgoing PONG frame here is exactly "does not answer pings";
    everything else, including the ping reaching the connection's event stream, is
    unchanged. https://websockets.readthedocs.io/en/stable/reference/sansio/client.html"""

    pongs_withheld = 0

    def send_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PONG:
            self.pongs_withheld += 1
            return
        super().send_frame(frame)


class _NoPongConnection(ClientConnection):
    """`connect(create_connection=...)` is websockets' documented hook for customising one
    connection; it receives the Sans-I/O protocol `connect` built, whose class is switched to
    the pong-withholding one above. Only connections made with this class are affected."""

    def __init__(self, protocol: ClientProtocol, **kwargs: Any) -> None:
        protocol.__class__ = _PongWithholdingProtocol
        super().__init__(protocol, **kwargs)


@dataclass
class GapStats:
    """Inter-arrival gaps above LATE_GAP_MS once frames started flowing. `mid_speech` says
    the frame before the gap was non-silent: an audible hole, not a pause between turns."""

    gaps: list[tuple[float, float, bool]] = field(default_factory=list)  # (t, gap_ms, mid)

    @property
    def count(self) -> int:
        return len(self.gaps)

    @property
    def mid_speech(self) -> int:
        return sum(1 for _, _, mid in self.gaps if mid)

    @property
    def max_ms(self) -> float:
        return max((gap for _, gap, _ in self.gaps), default=0.0)


@dataclass
class _Utterance:
    pcm: bytes
    done: asyncio.Future[None]
    offset: int = 0


class MediaLeg:
    """Connect, stream the caller, record what comes back. Times are unix seconds.

    With `autoplay` (default) the caller's PCM starts streaming as soon as the socket is up,
    silence frames after it; `SimCall` turns it off and speaks when its script says so
    (`play()`; `script.converse` drives a whole scripted caller)."""

    def __init__(self, url: str, sample_rate: int, custom_data: dict[str, str] | None = None,
                 caller_pcm: bytes = b"", extra_headers: dict[str, str] | None = None,
                 open_timeout: float = 5.0, marks: dict[str, float] | None = None,
                 autoplay: bool = True, options: MediaLegOptions | None = None) -> None:
        self.url = url
        self.options = options or MediaLegOptions()
        self.sample_rate = sample_rate
        self.custom_data = dict(custom_data or {})
        self.caller_pcm = caller_pcm
        self.extra_headers = extra_headers
        self.open_timeout = open_timeout
        self.autoplay = autoplay
        self.frame_size = frame_bytes(sample_rate)
        #: first_agent_audio, caller_speech_start, caller_speech_end, media_connected
        self.marks: dict[str, float] = marks if marks is not None else {}
        self.frames: list[tuple[float, bytes]] = []
        self.texts: list[tuple[float, str]] = []   # text frames other than clear
        self.clears: list[float] = []
        self.late_frames = GapStats()
        self.playout = Playout(sample_rate)
        self.sent_frames = 0
        #: silent frames not sent (options.silence_suppression)
        self.suppressed_frames = 0
        self.send_started_at: float | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed_by: str | None = None  # "caller" | "platform" | "server" | "lost"
        self._ws: ClientConnection | None = None
        self._speech: deque[_Utterance] = deque()
        self._voice_times: list[float] = []  # arrival of each non-silent frame
        self._tasks: list[asyncio.Task[None]] = []
        self._closing_by: str | None = None
        self._closed = asyncio.Event()
        self._changed = asyncio.Condition()

    # --- lifecycle -----------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the socket and send `websocket:connected`; raises on failure (no retry)."""
        # close_timeout: how long the platform waits for the gateway's close frame before it
        # drops the TCP connection itself (RFC 6455 §7.1.1 allows this; websockets aborts the
        # transport when it runs out). A frozen gateway then costs a hang-up 2 s, not 10.
        self._ws = await connect(self.url, additional_headers=self.extra_headers,
                                 open_timeout=self.open_timeout, compression=None,
                                 max_size=2**20, user_agent_header="Infobip-Sim",
                                 close_timeout=CLOSE_TIMEOUT_S,
                                 create_connection=None if self.options.answer_pings
                                 else _NoPongConnection)
        await self._ws.send(connected_message(self.sample_rate, self.custom_data,
                                              self.options.custom_data))
        self.marks.setdefault("media_connected", time.time())
        if self.autoplay and self.caller_pcm:
            self._enqueue(self.caller_pcm)
        self._tasks = [asyncio.create_task(self._send_loop(), name="media-leg-send"),
                       asyncio.create_task(self._recv_loop(), name="media-leg-recv")]

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def pongs_withheld(self) -> int:
        """Pings left unanswered (options.answer_pings False); 0 otherwise."""
        protocol = self._ws.protocol if self._ws is not None else None
        return protocol.pongs_withheld if isinstance(protocol, _PongWithholdingProtocol) else 0

    async def wait_closed(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._closed.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def hangup(self, code: int = 1000, reason: str = "caller hangup",
                     by: str = "caller") -> None:
        """End the leg from Infobip's side: close 1000 (the platform ends the child call)."""
        if self._ws is None or self.closed:
            return
        self._closing_by = by
        self._stop_sender()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._ws.close(code, reason), 5.0)
        await self.wait_closed(5.0)
        self._finish_close()

    async def aclose(self) -> None:
        """Stop everything (tests' cleanup); closes with 1000 when still open."""
        await self.hangup(by=self._closing_by or "caller")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- sending -------------------------------------------------------------------------

    async def play(self, pcm: bytes | None = None) -> None:
        """Speak `pcm` (default: the caller_pcm given at construction) in the steady stream;
        returns when its last frame was sent."""
        data = self.caller_pcm if pcm is None else pcm
        if data:
            await self._enqueue(data)

    async def wait_spoken(self, timeout: float = 30.0) -> bool:
        """True once everything queued for the caller to say (autoplay included) was sent."""
        pending = [utt.done for utt in self._speech]
        if not pending:
            return True
        _, not_done = await asyncio.wait(pending, timeout=timeout)
        return not not_done

    def _enqueue(self, data: bytes) -> asyncio.Future[None]:
        pad = (-len(data)) % self.frame_size
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._speech.append(_Utterance(data + bytes(pad), done))
        return done

    async def send_dtmf(self, digit: str, duration_ms: int = 250) -> None:
        await self.send_text(dtmf_message(digit, duration_ms))

    async def send_text(self, raw: str) -> None:
        assert self._ws is not None, "connect() first"
        await self._ws.send(raw)

    async def send_binary(self, raw: bytes) -> None:
        assert self._ws is not None, "connect() first"
        await self._ws.send(raw)

    def _next_frame(self) -> bytes:
        while self._speech:
            utt = self._speech[0]
            if utt.offset == 0:
                self.marks.setdefault("caller_speech_start", time.time())
            frame = utt.pcm[utt.offset: utt.offset + self.frame_size]
            utt.offset += self.frame_size
            if utt.offset >= len(utt.pcm):
                self._speech.popleft()
                self.marks["caller_speech_end"] = time.time() + FRAME_MS / 1000.0
                if not utt.done.done():
                    utt.done.set_result(None)
            if frame:
                return frame
        return bytes(self.frame_size)

    async def _send_loop(self) -> None:
        """Absolute schedule: frame k goes out at t0 + k*20 ms; a stall is caught up by
        sending the missed frames at once, so the count always matches the elapsed time."""
        assert self._ws is not None
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        self.send_started_at = time.time()
        period = FRAME_MS / 1000.0
        k = 0
        try:
            while True:
                delay = t0 + k * period - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                frame = self._next_frame()
                k += 1
                if self.options.silence_suppression and is_silent(frame):
                    # the schedule still advances: speech resumes on the 20 ms grid
                    self.suppressed_frames += 1
                    continue
                await self._ws.send(frame)
                self.sent_frames += 1
        except websockets.ConnectionClosed:
            pass
        finally:
            self._release_speech()

    def _stop_sender(self) -> None:
        if self._tasks:
            self._tasks[0].cancel()

    def _release_speech(self) -> None:
        while self._speech:
            utt = self._speech.popleft()
            if not utt.done.done():
                utt.done.set_result(None)

    # --- receiving -----------------------------------------------------------------------

    async def _recv_loop(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                now = time.time()
                if isinstance(message, bytes):
                    self._on_audio(message, now)
                elif is_clear(message):
                    self.clears.append(now)
                    drop = self.playout.clear(now)
                    log.debug("clear dropped %.0f ms of queued playout", drop.dropped_ms)
                else:
                    self.texts.append((now, message))
                    log.info("media leg got a text frame that is not clear: %.200s", message)
                await self._notify()
        except websockets.ConnectionClosed:
            pass
        finally:
            self._stop_sender()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ws.wait_closed(), 5.0)
            self._finish_close(force=True)
            await self._notify()

    def _on_audio(self, frame: bytes, now: float) -> None:
        if self.frames:
            prev_t, prev = self.frames[-1]
            gap_ms = (now - prev_t) * 1000.0
            if gap_ms > LATE_GAP_MS:
                self.late_frames.gaps.append((now, round(gap_ms, 1), not is_silent(prev)))
        self.frames.append((now, frame))
        self.playout.push(frame, now)
        if not is_silent(frame):
            self._voice_times.append(now)
            self.marks.setdefault("first_agent_audio", now)

    def _finish_close(self, force: bool = False) -> None:
        if self._closed.is_set() or self._ws is None:
            return
        if self._ws.close_code is None and self._closing_by is None and not force:
            return  # still open
        self.close_code = self._ws.close_code
        self.close_reason = self._ws.close_reason
        if self._closing_by is not None:
            self.closed_by = self._closing_by
        else:
            self.closed_by = "lost" if self.close_code in (None, 1006) else "server"
        self._closed.set()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- what the caller heard -----------------------------------------------------------

    def received_pcm(self) -> bytes:
        """Agent audio as the caller heard it: received frames minus what clears dropped."""
        return self.playout.pcm()

    @property
    def drops(self) -> list[Drop]:
        return self.playout.drops

    def _voice_after(self, after: float | None) -> float | None:
        """Arrival time of the first non-silent frame received after `after`."""
        if not self._voice_times:
            return None
        if after is None:
            return self._voice_times[0]
        index = bisect.bisect_right(self._voice_times, after)
        return self._voice_times[index] if index < len(self._voice_times) else None

    async def _wait(self, ready_in: Callable[[], float | None], timeout: float) -> bool:
        """Wait until `ready_in()` returns 0 (ready); it returns seconds until worth
        rechecking, or None to wait for the next frame. Bounded by `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            wait = ready_in()
            if wait == 0:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if wait is None and self.closed:
                return False
            step = remaining if wait is None else min(remaining, max(wait, 0.005))
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), step)

    async def wait_agent_audio(self, timeout: float, after: float | None = None) -> bool:
        """True once a non-silent frame arrived (after unix time `after`, when given)."""
        return await self._wait(lambda: 0 if self._voice_after(after) else None, timeout)

    async def wait_agent_quiet(self, quiet_ms: float = 800.0, timeout: float = 30.0,
                               after: float | None = None) -> bool:
        """True once agent audio was heard (after `after`) and then nothing audible has
        played for `quiet_ms` — measured on the playout clock, so audio sent in a burst
        counts as talking until it would have been heard."""
        def ready() -> float | None:
            if self._voice_after(after) is None:
                return None
            quiet_at = self.playout.voice_end + quiet_ms / 1000.0
            return max(0.0, quiet_at - time.time())

        return await self._wait(ready, timeout)
