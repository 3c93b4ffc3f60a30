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

log = logging.getLogger(__name__)

_OPEN = State.OPEN
_BINARY = Opcode.BINARY
_HEAD_SHORT = struct.Struct("!BB")
_HEAD_MEDIUM = struct.Struct("!BBH")
_HEAD_LONG = struct.Struct("!BBQ")
_FIN_TEXT, _FIN_BINARY, _MASK_BIT = 0x81, 0x82, 0x80
#: Frames from Infobip held while the session is not yet admitted (token check): 5 s.
EARLY_FRAMES = 250


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
    wait in a bounded buffer, oldest dropped first, and are replayed in order.

    Once the handshake is done, this connection cuts the byte stream into frames itself
    (RFC 6455 5.2: a 2-byte header, an extended length, a masking key) and unmasks the
    complete, unfragmented binary frames with websockets' C `apply_mask`: websockets'
    parser is a generator that costs several resumptions per frame. Every other frame
    (text, ping, pong, close, fragments) is handed to websockets whole, so its parser
    always stands at a frame boundary and its protocol checks and close handling are
    unchanged. A header websockets would refuse (reserved bits, an unmasked client frame,
    a frame above max_size) goes to websockets with the rest of the stream, which then
    fails the connection exactly as it would have.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_binary: BinaryHandler | None = None
        self._early: deque[bytes] = deque(maxlen=EARLY_FRAMES)
        self._partial = b""  # an incomplete frame's start
        self._request_tail = b""  # the handshake's last 3 bytes (a blank line may straddle)
        self._websockets_only = False  # set for good once websockets holds stream bytes
        self._framing = False  # this connection's frames have been cut here

    def set_binary_handler(self, handler: BinaryHandler) -> None:
        early, self._early = self._early, deque(maxlen=EARLY_FRAMES)
        for data in early:
            handler(data)
        self._on_binary = handler

    def clear_binary_handler(self) -> None:
        self._on_binary = None
        self._early.clear()

    def _deliver(self, data: bytes) -> None:
        handler = self._on_binary
        if handler is None:
            self._early.append(data)
            return
        try:
            handler(data)
        except Exception:  # one bad frame must not break the connection's parser
            log.exception("media frame handler failed")

    def process_event(self, event: Any) -> None:
        if type(event) is Frame and event.opcode is _BINARY and event.fin:
            self._deliver(cast(bytes, event.data))  # a parsed frame's payload is bytes
            return
        super().process_event(event)

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        if self._websockets_only:
            super().data_received(data)
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
                key = buf[offset:offset + 4]
                self._deliver(apply_mask(buf[offset + 4:frame_end], key))
            else:  # text, control, a fragment: websockets parses it, whole
                super().data_received(buf[pos:frame_end])
                if protocol.state is not _OPEN:  # it was a close: websockets takes the rest
                    self._to_websockets(buf[frame_end:])
                    return
            pos = frame_end
        self._partial = buf[pos:] if pos < end else b""

    def _to_websockets(self, rest: bytes) -> None:
        self._websockets_only = True
        self._partial = b""
        if rest:
            super().data_received(rest)

    def _handshake_data(self, data: bytes) -> None:
        """Before the 101: websockets parses. Fast framing later needs its parser to stand
        at a frame boundary, i.e. no byte after the request's blank line before our 101
        (RFC 6455 4.1: the client waits for the response). Otherwise, websockets keeps
        the whole stream."""
        had_request = self.request is not None
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
