"""The two per-frame WebSocket operations of the relay, taken off websockets' general path.

At 20 ms frames a call costs the gateway four WebSocket messages every 20 ms, so what
websockets does per message is most of the gateway's own CPU (bench/gateway, py-spy at 200
calls: a third of all samples were in websockets' framing, message assembly and task
wake-ups). Everything else (handshake, pings, close, control frames, fragmented messages,
text frames from Infobip, every check that fails a connection) stays with websockets; only
these two operations are ours:

- `write_frame`: one unfragmented data frame written straight to the transport, with the
  header packed by one `struct` call and, on the client side (the model socket), the
  payload masked by websockets' own C `apply_mask` with a key drawn from a pool of
  `os.urandom` bytes refilled in bulk (RFC 6455 5.3: unpredictable keys; one `getrandom`
  per 1,024 frames instead of one per frame). Measured: 0.4 us instead of 3.0 us unmasked,
  0.8 us instead of 3.4 us masked. Falls back to websockets' own send when it has bytes
  queued (a pong, say), so the order on the wire is kept.
- `MediaConnection`: a `ServerConnection` that cuts Infobip's byte stream into frames
  itself and hands each complete binary frame, unmasked by `apply_mask`, straight to a
  callback: not through websockets' generator-based parser (several resumptions per
  frame), its message assembler, a future and the reader task's `recv()`. Every other
  frame is handed to websockets whole, so text frames (control messages) and the close
  still reach `recv()` and the session's reader loop is unchanged.

Because this class sees every frame header first, it also enforces what a peer may cost
(`limits.py`): before admission a small frame size, a byte-bounded early buffer and a frame
count; after admission the call's `CallerMeter`, checked before a frame is even unmasked.
A peer over a limit is cut off here (`cut_reason` says why) without parsing the rest of
what it sent.
"""

from __future__ import annotations

import logging
import os
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import CLIENT, State
from websockets.speedups import apply_mask

from callbridge.services.media_gateway import metrics
from callbridge.services.media_gateway.limits import (
    ACCEPT,
    CUT,
    AdmissionGate,
    CallerMeter,
    ConnectionLimits,
)
from callbridge.services.media_gateway.metrics import Limited, RefusalReason
from callbridge.shared import ws_close_codes as close

log = logging.getLogger(__name__)

_OPEN = State.OPEN
_BINARY = Opcode.BINARY
_HEAD_SHORT = struct.Struct("!BB")
_HEAD_MEDIUM = struct.Struct("!BBH")
_HEAD_LONG = struct.Struct("!BBQ")
_FIN_TEXT, _FIN_BINARY, _MASK_BIT = 0x81, 0x82, 0x80
#: Bytes of early audio held per connection without configured limits (tests, tools).
EARLY_BUFFER_BYTES = ConnectionLimits().preadmission_buffer_bytes
#: Accounted per held frame on top of its payload (the bytes object and the deque slot), so
#: a budget of tiny frames is not a budget of a million objects.
EARLY_FRAME_OVERHEAD = 64
#: A connection cut off is aborted if its close has not completed by then (a peer that does
#: not read would otherwise keep a closing transport and its buffers).
CUT_ABORT_S = 2.0
#: The websockets-only path (a client that glued frames to its request) hands the parser at
#: most this much per call, so a cut-off stops it within one slice, not one 256 KiB read.
_WEBSOCKETS_SLICE = 4096


class _MaskKeys:
    """Masking keys from the OS's CSPRNG, fetched 4 KiB at a time."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def take(self) -> bytes:
        pos = self._pos
        if pos + 4 > len(self._buf):
            self._buf, pos = os.urandom(4096), 0
        self._pos = pos + 4
        return self._buf[pos:pos + 4]


_mask_keys = _MaskKeys()


def encode_frame(payload: bytes, *, text: bool, masked: bool) -> bytes:
    """One unfragmented data frame on the wire (RFC 6455 5.2), masked for a client."""
    head1 = _FIN_TEXT if text else _FIN_BINARY
    mask_bit = _MASK_BIT if masked else 0
    n = len(payload)
    if n < 126:
        header = _HEAD_SHORT.pack(head1, mask_bit | n)
    elif n < 65536:
        header = _HEAD_MEDIUM.pack(head1, mask_bit | 126, n)
    else:
        header = _HEAD_LONG.pack(head1, mask_bit | 127, n)
    if not masked:
        return header + payload
    key = _mask_keys.take()
    return header + key + apply_mask(payload, key)


def write_frame(conn: Connection, data: bytes, *, limit: int, text: bool = False) -> bool:
    """Send one WebSocket message now, without awaiting. False if it was not sent: the
    socket is not open, or its peer stopped reading (write buffer above `limit`)."""
    protocol = conn.protocol
    if protocol.state is not _OPEN:
        return False
    transport = conn.transport
    if transport.get_write_buffer_size() > limit:
        return False
    if protocol.writes:  # websockets has bytes queued (never seen): keep the order
        if text:
            protocol.send_text(data)
        else:
            protocol.send_binary(data)
        conn.send_data()
        return True
    transport.write(encode_frame(data, text=text, masked=protocol.side is CLIENT))
    return True


BinaryHandler = Callable[[bytes], None]


class MediaConnection(ServerConnection):
    """A server connection that hands each binary message to `set_binary_handler`'s
    callback as it arrives. Until a handler is set (the session is being admitted), frames
    wait in a byte-bounded buffer, oldest dropped first, and are replayed in order.

    Once the handshake is done, this connection cuts the byte stream into frames itself
    (RFC 6455 5.2: a 2-byte header, an extended length, a masking key) and unmasks the
    complete, unfragmented binary frames with websockets' C `apply_mask`: websockets'
    parser is a generator that costs several resumptions per frame. Every other frame
    (text, ping, pong, close, fragments) is handed to websockets whole, so its parser
    always stands at a frame boundary and its protocol checks and close handling are
    unchanged. A header websockets would refuse (reserved bits, an unmasked client frame,
    a frame above max_size) goes to websockets with the rest of the stream, which then
    fails the connection exactly as it would have.

    With `limits` (the gateway always passes them) the connection enforces the
    pre-admission bounds of `limits.ConnectionLimits`, joins `gate` until admitted, and
    treats a binary frame before any text frame as a protocol violation (the first message
    must be `websocket:connected`). Without them (tests of the framing itself) it only
    bounds the early buffer.
    """

    def __init__(self, *args: Any, limits: ConnectionLimits | None = None,
                 gate: AdmissionGate | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.created_at = self.loop.time()
        #: Why this side cut the connection off (a RefusalReason before admission, a
        #: Limited after), or None.
        self.cut_reason: RefusalReason | Limited | None = None
        self._limits = limits
        self._early_budget = (limits.preadmission_buffer_bytes if limits is not None
                              else EARLY_BUFFER_BYTES)
        self._on_binary: BinaryHandler | None = None
        self._meter: CallerMeter | None = None
        self._early: deque[bytes] = deque()
        self._early_bytes = 0
        self._pre_frames = 0  # frames of any kind received before admission
        self._pre_control = 0  # of which text/control/fragments
        self._request_bytes = 0
        self._discarding = False  # cut off: whatever arrives is dropped unread
        self._partial = b""  # an incomplete frame's start
        self._request_tail = b""  # the handshake's last 3 bytes (a blank line may straddle)
        self._websockets_only = False  # set for good once websockets holds stream bytes
        self._framing = False  # this connection's frames have been cut here
        protocol = self.protocol
        self._full_max_size = protocol.max_message_size
        if limits is not None:
            full = self._full_max_size
            small = limits.preadmission_max_frame_bytes
            protocol.max_message_size = small if full is None else min(full, small)
        self._gate = gate
        if gate is not None:
            gate.enter(self)

    # Admission -----------------------------------------------------------------------------

    @property
    def admitted(self) -> bool:
        return self._on_binary is not None

    def set_binary_handler(self, handler: BinaryHandler, meter: CallerMeter | None = None
                           ) -> None:
        """Admit the connection: full message size, leave the pending set, replay the early
        frames (the oldest dropped when they exceed the meter's burst), then hand every
        binary frame to `handler`, metered by `meter` when given."""
        self.protocol.max_message_size = self._full_max_size
        if self._gate is not None:
            self._gate.leave(self)
            self._gate = None
        early, self._early, self._early_bytes = self._early, deque(), 0
        skip = meter.admit_early([len(d) for d in early], self.loop.time()) if meter else 0
        for index, data in enumerate(early):
            if index >= skip:
                handler(data)
        self._meter = meter
        self._on_binary = handler

    def clear_binary_handler(self) -> None:
        self._on_binary = None
        self._meter = None
        self._early.clear()
        self._early_bytes = 0

    def evict(self) -> None:
        """Dropped from a full pending set (`AdmissionGate`): 1013, try again later."""
        if self.cut_reason is None:
            self.cut_reason = RefusalReason.CAPACITY
        if self.protocol.state is _OPEN:
            self._cut(close.TRY_AGAIN_LATER, "too many connections waiting to authenticate",
                      RefusalReason.CAPACITY)
        else:  # still in the handshake: nothing to say to it
            self._discarding = True
            transport = getattr(self, "transport", None)  # set by connection_made
            if transport is not None:
                transport.abort()

    def _cut(self, code: int, reason: str, why: RefusalReason | Limited) -> None:
        """Close now with `code`/`reason` and process nothing more (RFC 6455 7.1.7: fail
        the connection): the close frame and a FIN are sent, whatever arrives after is
        read and dropped unparsed, and the transport is aborted after CUT_ABORT_S unless
        the peer closed first. Reading on (rather than closing at once) is what gets the
        reason to a peer that is still sending: closing a socket with unread bytes makes
        the kernel answer with a reset, which discards our close frame on the way."""
        if self._discarding:
            return
        self._discarding = True
        if self.cut_reason is None:
            self.cut_reason = why
        self._partial = b""
        self._early.clear()
        self._early_bytes = 0
        protocol = self.protocol
        if protocol.state is _OPEN:
            protocol.fail(code, reason)
            self.send_data()
        self.loop.call_later(CUT_ABORT_S, self.transport.abort)

    def _flood_cut(self) -> None:
        meter = self._meter
        ratio = meter.flood_ratio if meter is not None else 0.0
        metrics.limited(Limited.FLOOD_CUTOFF)
        self._cut(close.POLICY_VIOLATION, f"caller sent faster than {ratio:g}x real time",
                  Limited.FLOOD_CUTOFF)

    def _hold(self, data: bytes) -> None:
        """A binary frame before admission: kept (byte-bounded, oldest out) for replay."""
        limits = self._limits
        if limits is not None:
            self._pre_frames += 1
            if self._pre_control == 0:  # audio before websocket:connected
                self._cut(close.POLICY_VIOLATION, "expected websocket:connected first",
                          RefusalReason.PROTOCOL)
                return
            if self._pre_frames > limits.preadmission_max_frames:
                self._cut(close.POLICY_VIOLATION, "too many frames before admission",
                          RefusalReason.TOO_LARGE)
                return
        early = self._early
        early.append(data)
        self._early_bytes += len(data) + EARLY_FRAME_OVERHEAD
        while self._early_bytes > self._early_budget and early:
            self._early_bytes -= len(early.popleft()) + EARLY_FRAME_OVERHEAD

    def _count_early_control(self) -> bool:
        """A text/control/fragment frame before admission; False if it broke a limit."""
        limits = self._limits
        if limits is None:
            return True
        self._pre_frames += 1
        self._pre_control += 1
        if (self._pre_control > limits.preadmission_max_control_frames
                or self._pre_frames > limits.preadmission_max_frames):
            self._cut(close.POLICY_VIOLATION, "too many messages before admission",
                      RefusalReason.TOO_LARGE)
            return False
        return True

    # Frames --------------------------------------------------------------------------------

    def _deliver(self, data: bytes) -> None:
        handler = self._on_binary
        if handler is None:
            self._hold(data)
            return
        try:
            handler(data)
        except Exception:  # one bad frame must not break the connection's parser
            log.exception("media frame handler failed")

    def process_event(self, event: Any) -> None:
        if type(event) is Frame:
            if self._discarding:
                return
            if event.opcode is _BINARY and event.fin:
                data = cast(bytes, event.data)  # a parsed frame's payload is bytes
                meter = self._meter
                if meter is not None:
                    verdict = meter.charge_audio(len(data), self.loop.time())
                    if verdict != ACCEPT:
                        if verdict == CUT:
                            self._flood_cut()
                        return
                self._deliver(data)
                return
            if self._websockets_only and not self._charge_control():
                return
        super().process_event(event)

    def _charge_control(self) -> bool:
        """Meter a non-audio frame (after admission) or count it (before); False: cut."""
        meter = self._meter
        if meter is not None:
            if meter.charge_control(self.loop.time()) == CUT:
                self._flood_cut()
                return False
            return True
        if self._on_binary is None:
            return self._count_early_control()
        return True

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        protocol = self.protocol
        if self._websockets_only:
            self._feed_websockets(data)
            return
        if protocol.state is not _OPEN:
            if self._framing:  # we closed (CLOSING): websockets finishes, from a boundary
                self._to_websockets(self._partial + data)
            else:
                self._handshake_data(data)
            return
        self._framing = True
        buf = self._partial + data if self._partial else data
        end = len(buf)
        limit = protocol.max_message_size
        meter = self._meter
        now = self.loop.time()
        pos = 0
        while end - pos >= 2:
            head1, head2 = buf[pos], buf[pos + 1]
            length = head2 & 0x7F
            offset = pos + 2
            if length == 126:
                if end - offset < 2:
                    break
                length = int.from_bytes(buf[offset:offset + 2], "big")
                offset += 2
            elif length == 127:
                if end - offset < 8:
                    break
                length = int.from_bytes(buf[offset:offset + 8], "big")
                offset += 8
            if head1 & 0x70 or not head2 & 0x80 or (limit is not None and length > limit):
                # Reserved bits, an unmasked client frame or too big: websockets fails
                # the connection with the right close code; it gets the stream from here.
                self._to_websockets(buf[pos:])
                return
            frame_end = offset + 4 + length
            if frame_end > end:
                break
            if head1 == _FIN_BINARY and protocol.current_size is None:
                if meter is not None:
                    # Before unmasking: a frame over the budget costs only its header.
                    verdict = meter.charge_audio(length, now)
                    if verdict != ACCEPT:
                        if verdict == CUT:
                            self._flood_cut()
                            return
                        pos = frame_end
                        continue
                key = buf[offset:offset + 4]
                self._deliver(apply_mask(buf[offset + 4:frame_end], key))
                if self._discarding:
                    return
            else:  # text, control, a fragment: websockets parses it, whole
                if not self._charge_control():
                    return
                super().data_received(buf[pos:frame_end])
                if protocol.state is not _OPEN:  # it was a close: websockets takes the rest
                    self._to_websockets(buf[frame_end:])
                    return
            pos = frame_end
        self._partial = buf[pos:] if pos < end else b""

    def _feed_websockets(self, data: bytes) -> None:
        """websockets parses a whole read before it hands over any frame: in slices, so a
        cut-off (or a failure) stops the parsing within one slice."""
        if len(data) <= _WEBSOCKETS_SLICE:
            super().data_received(data)
            return
        view = memoryview(data)
        for start in range(0, len(data), _WEBSOCKETS_SLICE):
            if self._discarding:
                return
            super().data_received(bytes(view[start:start + _WEBSOCKETS_SLICE]))

    def _to_websockets(self, rest: bytes) -> None:
        self._websockets_only = True
        self._partial = b""
        if rest:
            self._feed_websockets(rest)

    def _handshake_data(self, data: bytes) -> None:
        """Before the 101: websockets parses. Fast framing later needs its parser to stand
        at a frame boundary, i.e. no byte after the request's blank line before our 101
        (RFC 6455 4.1: the client waits for the response). Otherwise, websockets keeps
        the whole stream. A request head above `max_request_bytes` is dropped unanswered."""
        had_request = self.request is not None
        limits = self._limits
        if limits is not None and not had_request:
            self._request_bytes += len(data)
            if self._request_bytes > limits.max_request_bytes:
                self.cut_reason = RefusalReason.TOO_LARGE
                metrics.refused(RefusalReason.TOO_LARGE)
                self._discarding = True
                self.transport.abort()
                return
        head = self._request_tail + data
        super().data_received(data)
        if had_request:
            self._websockets_only = True  # bytes after the request, before our 101
        elif self.request is not None:
            blank = head.find(b"\r\n\r\n")
            if blank < 0 or blank + 4 < len(head):
                self._websockets_only = True  # frame bytes glued to the request
        done = self._websockets_only or self.request is not None
        self._request_tail = b"" if done else head[-3:]

    def eof_received(self) -> None:
        if self._framing and self._partial:  # a truncated frame: websockets sees it first
            partial, self._partial = self._partial, b""
            self._websockets_only = True
            super().data_received(partial)
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._gate is not None:
            self._gate.leave(self)
            self._gate = None
        self._early.clear()
        super().connection_lost(exc)


def media_connection_class(limits: ConnectionLimits, gate: AdmissionGate
                           ) -> type[MediaConnection]:
    """A `MediaConnection` class bound to one gateway's limits and pending set (websockets'
    `serve(create_connection=...)` takes a class)."""

    class GatewayConnection(MediaConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, limits=limits, gate=gate, **kwargs)

    return GatewayConnection
