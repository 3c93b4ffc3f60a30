"""The gateway's own per-frame WebSocket path (services/media_gateway/ws_fastpath.py) must be
indistinguishable on the wire from websockets': every frame it writes is parsed by
websockets' own parser (RFC 6455 framing, masking on the client side only), and binary
frames handed straight to the session arrive complete and in order, early ones included."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections import deque
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from callbridge.services.media_gateway.ws_fastpath import (
    EARLY_BUFFER_BYTES,
    EARLY_FRAME_OVERHEAD,
    MediaConnection,
    encode_frame,
    write_frame,
)
from tests.waiting import wait_until


def _parse(wire: bytes, *, masked: bool) -> list[Frame]:
    """Parse with websockets on the receiving side: a server expects masked frames (it
    fails the connection on an unmasked one), a client unmasked ones."""
    peer: ServerProtocol | ClientProtocol = (
        ServerProtocol(state=State.OPEN, max_size=None) if masked
        else ClientProtocol(parse_uri("ws://peer/"), state=State.OPEN, max_size=None))
    peer.receive_data(wire)
    events = peer.events_received()
    assert peer.state is State.OPEN, f"the peer refused the frame: {peer.close_exc}"
    return [e for e in events if isinstance(e, Frame)]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 960, 65535, 65536, 200_000])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("text", [False, True])
def test_frames_parse_with_websockets_at_every_length_encoding(size: int, masked: bool,
                                                               text: bool) -> None:
    payload = (b"a" * size) if text else os.urandom(size)
    frames = _parse(encode_frame(payload, text=text, masked=masked), masked=masked)
    assert len(frames) == 1
    frame = frames[0]
    assert frame.fin
    assert frame.opcode is (Opcode.TEXT if text else Opcode.BINARY)
    assert bytes(frame.data) == payload


def test_masking_keys_are_fresh_per_frame() -> None:
    payload = bytes(64)  # zero payload: the masked bytes are the key, repeated
    keys = {encode_frame(payload, text=False, masked=True)[2:6] for _ in range(3000)}
    assert len(keys) > 2990  # 32-bit keys from os.urandom across pool refills


async def test_media_connection_hands_binary_frames_over_in_order() -> None:
    """Frames sent before the handler exists (admission) are replayed first, in order;
    text frames still reach recv(); the server writes with write_frame and the client,
    a plain websockets client, reads them intact."""
    received: list[bytes] = []
    texts: list[str] = []
    admitted = asyncio.Event()
    release = asyncio.Event()
    handlers: list[MediaConnection] = []

    async def handler(server_conn: ServerConnection) -> None:
        assert isinstance(server_conn, MediaConnection)
        conn = server_conn
        handlers.append(conn)
        texts.append(str(await conn.recv()))  # like _admit: the first text frame
        await release.wait()  # binary frames sent meanwhile wait in the early buffer
        conn.set_binary_handler(received.append)
        admitted.set()
        assert write_frame(conn, b"\x01\x02" * 480, limit=65536)
        assert write_frame(conn, b'{"action":"clear"}', text=True, limit=65536)
        async for message in conn:
            texts.append(str(message))

    async with serve(handler, "127.0.0.1", 0, create_connection=MediaConnection,
                     compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None) as client:
            await client.send('{"event":"websocket:connected"}')
            frames = [bytes([i]) * 960 for i in range(20)]
            for frame in frames[:10]:
                await client.send(frame)
            await wait_until(lambda: handlers and len(handlers[0]._early) == 10,
                             what="the first frames held while the session is admitted")
            release.set()
            await admitted.wait()
            for frame in frames[10:]:
                await client.send(frame)
            await client.send('{"event":"websocket:dtmf","digit":"5"}')
            assert await client.recv() == b"\x01\x02" * 480
            assert await client.recv() == '{"action":"clear"}'
        await wait_until(lambda: handlers and handlers[0].state is State.CLOSED,
                         what="the server to see the close")
    assert received == frames
    assert texts == ['{"event":"websocket:connected"}', '{"event":"websocket:dtmf","digit":"5"}']


def test_early_buffer_is_bounded_in_bytes_and_keeps_the_newest() -> None:
    """Frames held before admission are bounded by bytes, not by count: 64 KiB frames must
    not make the buffer 16 MB (each frame is accounted with a per-object overhead too)."""
    conn = _bare_connection()
    frame_bytes = 4096
    n = EARLY_BUFFER_BYTES // frame_bytes + 10
    for i in range(n):
        conn.process_event(Frame(Opcode.BINARY, i.to_bytes(4, "big") * (frame_bytes // 4)))
    assert conn._early_bytes <= EARLY_BUFFER_BYTES
    got: list[bytes] = []
    conn.set_binary_handler(got.append)
    kept = EARLY_BUFFER_BYTES // (frame_bytes + EARLY_FRAME_OVERHEAD)
    assert len(got) == kept
    assert got[-1][:4] == (n - 1).to_bytes(4, "big")  # the newest is kept
    assert got[0][:4] == (n - kept).to_bytes(4, "big")


class _Protocol:
    max_message_size = 2**20


def _bare_connection() -> MediaConnection:
    """A MediaConnection without a socket: enough for process_event and the handler."""
    conn = MediaConnection.__new__(MediaConnection)
    conn.protocol = _Protocol()  # type: ignore[assignment]
    conn._full_max_size = 2**20
    conn._limits = None
    conn._gate = None
    conn._meter = None
    conn._discarding = False
    conn._websockets_only = False
    conn._on_binary = None
    conn._early = deque()
    conn._early_bytes = 0
    conn._early_budget = EARLY_BUFFER_BYTES
    conn._pre_frames = conn._pre_control = 0
    return conn


def test_a_failing_handler_is_logged_and_the_next_frame_still_arrives() -> None:
    conn = _bare_connection()
    got: list[bytes] = []

    def on_audio(data: bytes) -> None:
        if data == b"bad!":
            raise ValueError("bad frame")
        got.append(data)

    conn.set_binary_handler(on_audio)
    conn.process_event(Frame(Opcode.BINARY, b"bad!"))  # logged, not raised
    conn.process_event(Frame(Opcode.BINARY, b"good"))
    assert got == [b"good"]


def test_clearing_the_handler_drops_the_sessions_reference() -> None:
    class Session:
        def on_audio(self, data: bytes) -> None:
            pass

    conn = _bare_connection()
    session = Session()
    ref = weakref.ref(session)
    conn.set_binary_handler(session.on_audio)
    conn.process_event(Frame(Opcode.BINARY, b"\x00\x00"))
    conn.clear_binary_handler()
    del session  # refcounting alone must free it: the gateway almost never runs a full GC
    assert ref() is None, "the connection still holds the session's handler"


# --- incoming framing: the stream cut at every possible place ------------------------------

class _RawClient(asyncio.Protocol):
    """A client speaking through websockets' Sans-I/O protocol, whose bytes we write in
    chunks of our choosing (so frames straddle reads anywhere)."""

    def __init__(self, url: str, split_request: bool = False) -> None:
        self.split_request = split_request  # hold back the request's last 2 bytes
        self.request_rest = b""
        self.proto = ClientProtocol(parse_uri(url))
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.pongs = 0
        self.transport: asyncio.Transport | None = None
        self.held: list[bytes] | None = None  # a list: incoming bytes wait (hold())

    def hold(self) -> None:
        self.held = []

    def release(self) -> None:
        held, self.held = self.held or [], None
        for data in held:
            self.data_received(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.proto.send_request(self.proto.connect())
        if self.split_request:
            request = b"".join(self.proto.data_to_send())
            self.request_rest = request[-2:]  # the blank line's "\r\n" comes in a later read
            transport.write(request[:-2])  # type: ignore[attr-defined]
        self._flush()

    def finish_request(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request_rest)

    def data_received(self, data: bytes) -> None:
        if self.held is not None:
            self.held.append(data)
            return
        self.proto.receive_data(data)
        for event in self.proto.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.PONG:
                self.pongs += 1
            elif not isinstance(event, Frame) and not self.opened.done():
                self.opened.set_result(None)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            rcvd = self.proto.close_rcvd
            self.closed.set_result(rcvd.code if rcvd else None)

    def _flush(self) -> None:
        assert self.transport is not None
        for chunk in self.proto.data_to_send():
            if chunk:
                self.transport.write(chunk)

    def write_chunked(self, wire: bytes, sizes: list[int]) -> None:
        assert self.transport is not None
        pos = 0
        for size in sizes:
            if pos >= len(wire):
                break
            self.transport.write(wire[pos:pos + size])
            pos += size
        if pos < len(wire):
            self.transport.write(wire[pos:])


async def _media_server(max_size: int = 2**20, conns: list[MediaConnection] | None = None
                        ) -> tuple[Any, list[bytes], list[Any]]:
    """A server of MediaConnections; `conns` receives each one as it is created (before
    its handshake), `audio` the binary frames, `messages` what recv() returns."""
    audio: list[bytes] = []
    messages: list[Any] = []
    created = conns if conns is not None else []

    class Recorded(MediaConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            created.append(self)

    async def handler(server_conn: ServerConnection) -> None:
        assert isinstance(server_conn, MediaConnection)
        server_conn.set_binary_handler(audio.append)
        async for message in server_conn:
            messages.append(message)

    server = await serve(handler, "127.0.0.1", 0, create_connection=Recorded,
                         compression=None, max_size=max_size)
    return server, audio, messages


async def _open_raw_client(server: Any, conns: list[MediaConnection] | None = None,
                           split_request: bool = False) -> _RawClient:
    port = server.sockets[0].getsockname()[1]
    client = _RawClient(f"ws://127.0.0.1:{port}", split_request)
    await asyncio.get_running_loop().create_connection(lambda: client, "127.0.0.1", port)
    if split_request:  # the server has read the first part before the rest is sent
        assert conns is not None
        await wait_until(lambda: conns and conns[-1]._request_tail,
                         what="the request's first part read by the server")
        client.finish_request()
    await asyncio.wait_for(client.opened, 5)
    return client


def _wire(frames: list[Frame]) -> bytes:
    return b"".join(f.serialize(mask=True) for f in frames)


@pytest.mark.parametrize("chunking", ["one-byte", "random", "whole"])
async def test_incoming_frames_survive_any_segmentation(chunking: str) -> None:
    import random

    rng = random.Random(7)
    binaries = [os.urandom(n) for n in (0, 1, 125, 126, 960, 961, 65535, 65536, 300_000)]
    frames = [Frame(Opcode.TEXT, b'{"event":"websocket:connected"}')]
    frames += [Frame(Opcode.BINARY, b) for b in binaries[:4]]
    frames += [Frame(Opcode.PING, b"keepalive")]
    frames += [Frame(Opcode.BINARY, b"frag-1-", fin=False), Frame(Opcode.CONT, b"frag-2")]
    frames += [Frame(Opcode.BINARY, b) for b in binaries[4:]]
    frames += [Frame(Opcode.TEXT, b'{"event":"websocket:dtmf","digit":"7"}')]
    wire = _wire(frames)
    sizes = {"one-byte": [1] * 4000 + [len(wire)],  # the first frames byte by byte
             "random": [rng.randint(1, 3000) for _ in range(len(wire) // 1500 + 1)],
             "whole": [len(wire)]}[chunking]
    conns: list[MediaConnection] = []
    server, audio, messages = await _media_server(conns=conns)
    async with server:
        client = await _open_raw_client(server)
        client.write_chunked(wire, sizes)
        await wait_until(lambda: len(messages) == 3, what="the text and fragmented messages")
        assert not conns[0]._websockets_only, "the fast framing gave up on a valid stream"
        client.proto.send_close(1000)
        client._flush()
        assert await asyncio.wait_for(client.closed, 5) == 1000
    assert audio == binaries  # every unfragmented binary frame, intact and in order
    assert messages == ['{"event":"websocket:connected"}', b"frag-1-frag-2",
                        '{"event":"websocket:dtmf","digit":"7"}']
    assert client.pongs == 1


async def test_frames_glued_to_the_request_are_left_to_websockets() -> None:
    """A client that does not wait for our 101 (RFC 6455 4.1 says it must): websockets
    keeps the whole stream and nothing is lost or misread."""
    conns: list[MediaConnection] = []
    server, audio, messages = await _media_server(conns=conns)
    async with server:
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        client = _RawClient(f"ws://127.0.0.1:{port}")
        transport, _ = await loop.create_connection(lambda: client, "127.0.0.1", port)
        frames = [Frame(Opcode.TEXT, b"hello")] + [Frame(Opcode.BINARY, bytes([i]) * 960)
                                                   for i in range(5)]
        transport.write(_wire(frames))  # right behind the request, before the 101
        await asyncio.wait_for(client.opened, 5)
        await wait_until(lambda: len(audio) == 5, what="the five frames")
        client.write_chunked(_wire([Frame(Opcode.BINARY, b"\x09" * 960)]), [3, 100])
        await wait_until(lambda: len(audio) == 6, what="a later frame")
        assert conns[0]._websockets_only
    assert messages == ["hello"]
    assert audio == [bytes([i]) * 960 for i in range(5)] + [b"\x09" * 960]


@pytest.mark.parametrize(("wire", "code"), [
    (Frame(Opcode.BINARY, b"\x00" * 960).serialize(mask=False), 1002),  # unmasked
    (Frame(Opcode.BINARY, b"\x00" * 5000).serialize(mask=True), 1009),  # above max_size
    (b"\xc2\x80\x00\x00\x00\x00", 1002),  # a reserved bit set, no extension negotiated
])
async def test_bad_frames_fail_the_connection_as_websockets_would(wire: bytes,
                                                                  code: int) -> None:
    server, audio, _ = await _media_server(max_size=4096)
    async with server:
        client = await _open_raw_client(server)
        client.write_chunked(_wire([Frame(Opcode.BINARY, b"ok")]) + wire, [len(wire) // 2])
        assert await asyncio.wait_for(client.closed, 5) == code
    assert audio == [b"ok"]


async def test_a_close_we_start_mid_frame_completes_cleanly() -> None:
    """We close while half a frame sits in our buffer: websockets must get that half too,
    or it reads the rest of the stream from the middle of a frame."""
    conns: list[MediaConnection] = []
    server, audio, _ = await _media_server(conns=conns)
    async with server:
        client = await _open_raw_client(server)
        frame = _wire([Frame(Opcode.BINARY, b"\x05" * 960)])
        client.write_chunked(_wire([Frame(Opcode.BINARY, b"first")]) + frame[:100], [10_000])
        await wait_until(lambda: audio == [b"first"] and conns[0]._partial,
                         what="a frame and half of the next")
        client.hold()  # the client finishes its frame before it reads our close
        closing = asyncio.ensure_future(conns[0].close(1000, "call ended"))
        await wait_until(lambda: conns[0].protocol.state is State.CLOSING, what="CLOSING")
        client.write_chunked(frame[100:], [10_000])  # the rest of that frame
        client.release()  # now it reads the close and echoes it (its protocol does)
        await asyncio.wait_for(closing, 5)
        assert conns[0].close_code == 1000
    # websockets parsed the rest from the frame's start: the frame arrives whole (as with
    # websockets alone, frames received while closing are still delivered)
    assert audio == [b"first", b"\x05" * 960]


async def test_a_request_whose_blank_line_straddles_reads_still_gets_fast_framing() -> None:
    """The request's blank line can straddle reads: it must still be recognised as the end
    of the request (else every such connection would fall back to websockets' parser)."""
    conns: list[MediaConnection] = []
    server, audio, _ = await _media_server(conns=conns)
    async with server:
        client = await _open_raw_client(server, conns, split_request=True)
        frames = [bytes([i]) * 960 for i in range(3)]
        client.write_chunked(_wire([Frame(Opcode.BINARY, f) for f in frames]), [500, 500])
        await wait_until(lambda: len(audio) == 3, what="three frames")
        assert not conns[0]._websockets_only
    assert audio == frames
