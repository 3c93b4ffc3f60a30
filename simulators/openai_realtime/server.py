"""The OpenAI Realtime GA simulator's WebSocket server: handshake, connections, faults.

`ws://host:port/v1/realtime?model=<model>`. As on the live endpoint the upgrade always
succeeds (101) and a failure is an `error` event followed at once by a close frame whose code
says whether it is fatal (the Realtime API reference
(https://platform.openai.com/docs/api-reference/realtime), "The beta interface is
switched off"): bad/missing key -> 3000, `OpenAI-Beta: realtime=v1` -> 4000, bad/missing model
-> 4000. Fault hooks (drop_all, expire_all, refuse_next, stall) serve the gateway's reconnect
tests and the fault suite.

`auth="api-key"` makes it stand in for an Azure OpenAI Realtime deployment (a failover
secondary): the key is expected in an `api-key` header instead of `Authorization: Bearer`, and
the model may be named by `?deployment=` as well as `?model=`
(https://learn.microsoft.com/azure/foundry/openai/how-to/realtime-audio-websockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Literal
from urllib.parse import parse_qs

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from callbridge.simulators.openai_realtime.audio import Reply
from callbridge.simulators.openai_realtime.records import SimSession
from callbridge.simulators.openai_realtime.session import RealtimeSession
from callbridge.simulators.openai_realtime.wire import ClientError, dumps, error_event

log = logging.getLogger(__name__)

PATHS = ("/v1/realtime", "/v1/realtime/")
MODEL_PREFIX = "gpt-realtime"  # gpt-realtime, -mini, -1.5, -2, ... (ref: "Models")
CLOSE_AUTH = 3000  # fatal: fix the key
CLOSE_BAD_REQUEST = 4000  # fatal: beta header, bad model
CLOSE_GOING_AWAY = 1001  # session_expired


@dataclass(eq=False)
class _Live:
    """An open connection the fault hooks can reach."""

    ws: ServerConnection
    record: SimSession
    session: RealtimeSession | None = None
    stalled: bool = False
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    expiry: asyncio.TimerHandle | None = None


class RealtimeSimulator:
    """In-process Realtime GA server for tests, the demo and benchmarks.

    `speed` is how much faster than real time reply audio is sent (live: faster than real
    time, ref "Barge-in done right"); `script` replaces the default replies (greeting first,
    then the order-status answer; the last entry repeats). `max_session_s` is the session
    limit (live: 60 minutes). `keep_sessions` bounds `sessions` for long runs.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str = "sk-sim",
                 speed: float = 4.0, script: Sequence[Reply] | None = None, *,
                 max_session_s: float = 3600.0, chunk_ms: int = 100,
                 transcription_delay_s: float = 0.3,
                 keep_sessions: int | None = None,
                 auth: Literal["bearer", "api-key"] = "bearer") -> None:
        self.host = host
        self.auth = auth
        self.port = port
        self._api_key = api_key
        self.speed = speed
        self.script = list(script) if script else None
        self.max_session_s = max_session_s
        self.chunk_ms = chunk_ms
        self.transcription_delay_s = transcription_delay_s
        self.keep_sessions = keep_sessions
        self.sessions: list[SimSession] = []
        self._count = 0
        self._changed = asyncio.Event()
        self._live: set[_Live] = set()
        self._refusals: deque[tuple[int, str, str]] = deque()
        #: errors the next session.updates get, whatever they contain (reject_session_updates)
        self._update_rejections: deque[ClientError] = deque()
        #: check every server event against the SDK's types (benchmarks may turn it off)
        self.validate_server_events = True
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: Server | None = None

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        # No compression: audio does not deflate and it would cost CPU per frame.
        self._server = await serve(self._handler, self.host, self.port,
                                   process_request=self._process_request, compression=None,
                                   max_size=16 * 1024 * 1024, ping_interval=20,
                                   ping_timeout=20, close_timeout=5)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/realtime"

    async def stop(self) -> None:
        if self._server is None:
            return
        for live in list(self._live):
            if live.stalled:  # a paused reader would never finish a closing handshake
                live.ws.transport.abort()
        self._server.close(close_connections=True)
        await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        self._server = None

    async def __aenter__(self) -> RealtimeSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for_sessions(self, n: int, timeout: float = 10.0) -> list[SimSession]:
        """Return once `n` connections (in total) have arrived."""
        async with asyncio.timeout(timeout):
            while self._count < n:
                self._changed.clear()
                await self._changed.wait()
        return list(self.sessions)

    @property
    def open_sessions(self) -> list[SimSession]:
        return [live.record for live in self._live]

    # fault hooks ---------------------------------------------------------------------------

    async def drop_all(self, timeout: float = 5.0) -> None:
        """TCP reset on every connection: no close frame (the client sees code 1006)."""
        lives = list(self._live)
        for live in lives:
            live.record.dropped = True
            _reset(live.ws)
        for live in lives:
            with contextlib.suppress(TimeoutError):
                await live.record.wait_closed(timeout)

    async def expire_all(self) -> None:
        """`error` session_expired then close 1001 on every open connection (ref)."""
        await asyncio.gather(*(self._expire(live) for live in list(self._live)
                               if live.session is not None))

    def refuse_next(self, n: int = 1, code: int = CLOSE_BAD_REQUEST,
                    error_code: str | None = None, message: str | None = None) -> None:
        """The next `n` connections fail right after the upgrade: error event + close `code`."""
        if error_code is None:
            error_code = "invalid_api_key" if code == CLOSE_AUTH else "server_error"
        if message is None:
            message = ("Incorrect API key provided." if code == CLOSE_AUTH else
                       "The server had an error while processing your request.")
        for _ in range(n):
            self._refusals.append((code, error_code, message))

    async def close_all(self, code: int, reason: str = "") -> None:
        """Close every open connection with `code` (a clean close frame, unlike drop_all)."""
        lives = [live for live in self._live if live.session is not None]
        for live in lives:
            with contextlib.suppress(ConnectionClosed):
                await live.ws.close(code, reason)

    def reject_session_updates(self, n: int = 1, code: str = "invalid_value",
                               message: str = "Invalid value: 'marin'. This voice is not "
                               "available for this model.",
                               param: str | None = "session.audio.output.voice") -> None:
        """The next `n` `session.update`s (on any connection) are refused with an `error`
        naming their `event_id`; as on the live service the whole update is discarded, the
        session keeps its defaults and the socket stays open
        (docs/protocol-assumptions.md; https://platform.openai.com/docs/api-reference/realtime)."""
        for _ in range(n):
            self._update_rejections.append(ClientError(code, message, param))

    def stall(self) -> None:
        """Open connections hang: no events, no pongs, nothing read. New ones work."""
        for live in self._live:
            live.stalled = live.record.stalled = True
            live.resume.clear()
            with contextlib.suppress(Exception):
                live.ws.transport.pause_reading()

    def unstall(self) -> None:
        for live in self._live:
            if live.stalled:
                live.stalled = live.record.stalled = False
                live.resume.set()
                with contextlib.suppress(Exception):
                    live.ws.transport.resume_reading()

    # connection ----------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection,
                         request: Request) -> Response | None:
        if request.path.partition("?")[0] not in PATHS:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    def _handshake_failure(self, record: SimSession) -> tuple[int, str, str, str | None] | None:
        """(close code, error code, message, param) when this connection must be refused."""
        if self._refusals:
            code, err, msg = self._refusals.popleft()
            return code, err, msg, None
        if self.auth == "api-key":  # Azure key auth: the key alone, in its own header
            auth = record.headers.get("api-key", "")
            scheme, key = "Bearer", auth
        else:
            auth = record.headers.get("authorization", "")
            scheme, _, key = auth.partition(" ")
        if not auth or scheme != "Bearer" or not hmac.compare_digest(
                key.strip().encode(), self._api_key.encode()):
            # The key is never echoed back: gateway logs must not carry it.
            msg = ("Incorrect API key provided." if auth else
                   "You didn't provide an API key. You need to provide your API key in an "
                   "Authorization header using Bearer auth (i.e. Authorization: Bearer "
                   "YOUR_KEY).")
            return CLOSE_AUTH, "invalid_api_key", msg, None
        if "realtime=v1" in record.headers.get("openai-beta", ""):
            return (CLOSE_BAD_REQUEST, "beta_api_shape_disabled",
                    "The Realtime API beta shape is disabled: remove the 'OpenAI-Beta: "
                    "realtime=v1' header and use the GA interface.", None)
        model = record.model
        if not model:
            return (CLOSE_BAD_REQUEST, "missing_model",
                    "Missing required parameter: 'model'.", "model")
        if not model.startswith(MODEL_PREFIX):
            return (CLOSE_BAD_REQUEST, "invalid_model",
                    f"Invalid model: '{model}'. The model does not exist or you do not have "
                    "access to it.", "model")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        path, _, qs = request.path.partition("?")
        query = {k: v[-1] for k, v in parse_qs(qs, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        record = SimSession(self._count, path, query, headers)
        self._count += 1
        self.sessions.append(record)
        self._trim()
        self._changed.set()
        live = _Live(ws, record)
        self._live.add(live)
        try:
            failure = self._handshake_failure(record)
            if failure is not None:
                await self._refuse(live, *failure)
                return
            await self._serve_session(live)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("realtime sim session %d failed", record.index)
            await ws.close(1011, "internal error")
        finally:
            if live.expiry is not None:
                live.expiry.cancel()
            if live.session is not None:
                live.session.close()
            live.resume.set()
            self._live.discard(live)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.wait_closed(), 10)
            record.record_closed(ws.close_code, ws.close_reason)
            log.info("realtime sim session %d closed with %s", record.index, ws.close_code)

    async def _refuse(self, live: _Live, close_code: int, code: str, message: str,
                      param: str | None) -> None:
        live.record.handshake_error = code
        evt = error_event(code, message, param,
                          err_type="server_error" if code == "server_error" else
                          "invalid_request_error")
        live.record.record_sent(evt)
        await live.ws.send(dumps(evt))
        await live.ws.close(close_code, code)

    async def _serve_session(self, live: _Live) -> None:
        ws, record = live.ws, live.record

        async def send(text: str) -> None:
            while live.stalled:  # a hung server: hold every event until unstalled/closed
                await live.resume.wait()
                if live.record.is_closed or ws.close_code is not None:
                    return
            await ws.send(text)

        session = RealtimeSession(record, send, model=record.model or "gpt-realtime",
                                  speed=self.speed, chunk_ms=self.chunk_ms,
                                  max_session_s=self.max_session_s,
                                  transcription_delay_s=self.transcription_delay_s,
                                  script=self.script,
                                  validate_server_events=self.validate_server_events,
                                  update_rejections=self._update_rejections)
        live.session = session
        await session.start()
        loop = asyncio.get_running_loop()
        live.expiry = loop.call_later(self.max_session_s, self._spawn_expire, live)
        log.info("realtime sim session %d open (model %s)", record.index, record.model)
        async for message in ws:
            await session.handle(message)

    def _spawn_expire(self, live: _Live) -> None:
        task = asyncio.ensure_future(self._expire(live))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(self, live: _Live) -> None:
        """The live server's 60-minute limit: error session_expired, then close 1001 (ref)."""
        if live.record.is_closed or live.record.expired:
            return
        live.record.expired = True
        minutes = f"{self.max_session_s / 60:g}"
        evt = error_event("session_expired",
                          f"Your session hit the maximum duration of {minutes} minutes.")
        live.record.record_sent(evt)
        with contextlib.suppress(ConnectionClosed):
            await live.ws.send(dumps(evt))  # bypasses stall(): expiry is the server's clock
            await live.ws.close(CLOSE_GOING_AWAY, "session_expired")

    def _trim(self) -> None:
        if self.keep_sessions is None or len(self.sessions) <= self.keep_sessions:
            return
        excess = len(self.sessions) - self.keep_sessions
        closed = [s for s in self.sessions if s.is_closed][:excess]
        drop = {id(s) for s in closed}
        self.sessions = [s for s in self.sessions if id(s) not in drop]


def _reset(ws: ServerConnection) -> None:
    """Abort with SO_LINGER 0 so the peer gets a RST, as a crashed server/LB would send."""
    transport = ws.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def serve_forever(host: str, port: int, api_key: str, speed: float, *,
                        max_session_s: float = 3600.0,
                        script: Sequence[Reply] | None = None) -> None:
    """Run the simulator until cancelled (the `callbridge sim openai` command calls this)."""
    sim = RealtimeSimulator(host, port, api_key, speed, script, max_session_s=max_session_s,
                            keep_sessions=500)
    await sim.start()
    log.info("OpenAI Realtime simulator listening on %s", sim.url,
             extra={"url": sim.url, "speed": speed})
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()

