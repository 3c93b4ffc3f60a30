"""The gateway's own per-frame WebSocket path (services/media_gateway/ws_fastpath.py) must be
indistinguishable on the wire from websockets': every frame it writes is parsed by
websockets' own parser (RFC 6455 framing, masking on the client side only), and binary
frames handed straight to the session arrive complete and in order, early ones included."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections import deque

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from services.media_gateway.ws_fastpath import (
    EARLY_FRAMES,
    MediaConnection,
    frame_bytes,
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
    frames = _parse(frame_bytes(payload, text=text, masked=masked), masked=masked)
    assert len(frames) == 1
    frame = frames[0]
    assert frame.fin
    assert frame.opcode is (Opcode.TEXT if text else Opcode.BINARY)
    assert bytes(frame.data) == payload


def test_masking_keys_are_fresh_per_frame() -> None:
    payload = bytes(64)  # zero payload: the masked bytes are the key, repeated
    keys = {frame_bytes(payload, text=False, masked=True)[2:6] for _ in range(3000)}
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
        assert write_frame(conn, b"\x01\x02" * 480)
        assert write_frame(conn, b'{"action":"clear"}', text=True)
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
        for _ in range(200):  # bounded: the server sees the close
            if handlers and handlers[0].state is State.CLOSED:
                break
            await asyncio.sleep(0.01)
    assert received == frames
    assert texts == ['{"event":"websocket:connected"}', '{"event":"websocket:dtmf","digit":"5"}']


def test_early_buffer_is_bounded_and_keeps_the_newest() -> None:
    conn = _bare_connection()
    for i in range(EARLY_FRAMES + 10):
        conn.process_event(Frame(Opcode.BINARY, i.to_bytes(4, "big")))
    got: list[bytes] = []
    conn.set_binary_handler(got.append)
    assert len(got) == EARLY_FRAMES
    assert got[0] == (10).to_bytes(4, "big")


def _bare_connection() -> MediaConnection:
    """A MediaConnection without a socket: enough for process_event and the handler."""
    conn = MediaConnection.__new__(MediaConnection)
    conn._on_binary = None
    conn._early = deque(maxlen=EARLY_FRAMES)
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
