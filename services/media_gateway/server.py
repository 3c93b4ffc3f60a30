"""The media gateway process: a websockets server, one `MediaSession` per admitted call.

Shape (websockets' asyncio server, https://websockets.readthedocs.io/en/stable/reference/asyncio/server.html):
`serve(handler, host, port, process_request=...)`. Health, readiness and metrics are
answered in `process_request` on the media port (GATEWAY_PORT, README "Configuration"),
before any upgrade, and so is admission: past GATEWAY_MAX_SESSIONS or
while draining, an upgrade gets a plain HTTP 503 instead of a socket that is then dropped.

Admission (limits.py has the threat model): a connection is *pending* from TCP accept until
its `websocket:connected` carried a valid media token; pending connections live in their
own bounded set (GATEWAY_MAX_PENDING, the longest-waiting dropped when full) under a
deadline (GATEWAY_CONNECT_TIMEOUT_S, the handshake included) and small frame and buffer limits. The
session cap counts admitted calls only (a slot is taken just before the token is claimed),
so silent or junk connections can never keep a real call out.

Limits set on the server: `max_size` (an oversized message closes with 1009), keep-alive
pings (a half-open Infobip socket ends within interval + timeout), no compression (PCM does
not compress and deflate costs ~100 KB of memory per socket).

Shutdown (SIGTERM): readiness false at once, new upgrades refused, live calls run to their
end for up to GATEWAY_DRAIN_TIMEOUT_S; calls still alive then are ended (`drain_timeout`, hang-up
job) and the process exits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import signal
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from callbridge.services.media_gateway import gc_pauses, metrics
from callbridge.services.media_gateway.admission import admit
from callbridge.services.media_gateway.config import GatewaySettings
from callbridge.services.media_gateway.fencing import FenceCheck
from callbridge.services.media_gateway.limits import AdmissionGate, ConnectionLimits, SessionSlots
from callbridge.services.media_gateway.metrics import RefusalReason
from callbridge.services.media_gateway.pacer import PacerHub
from callbridge.services.media_gateway.session import MediaSession, SessionDeps
from callbridge.services.media_gateway.state import Heartbeat, StateStore, connect_redis
from callbridge.services.media_gateway.tools import ToolRegistry, default_registry
from callbridge.services.media_gateway.ws_fastpath import MediaConnection, media_connection_class
from callbridge.shared import health
from callbridge.shared.profiles import ProfileBook, load_profiles

log = logging.getLogger(__name__)


class Gateway:
    """Start with `async with Gateway(settings) as gw:` (or `start()`/`stop()`)."""

    def __init__(self, settings: GatewaySettings, *, profiles: ProfileBook | None = None,
                 tools: ToolRegistry | None = None) -> None:
        self.settings = settings
        self.profiles = profiles or load_profiles(settings.agent_profiles_file)
        self.tools = tools or default_registry()
        self.sessions: set[MediaSession] = set()
        self.draining = False
        self.gate = AdmissionGate(settings.gateway_max_pending)
        self.slots = SessionSlots(settings.gateway_max_sessions)
        self._connection_class = media_connection_class(ConnectionLimits(
            max_request_bytes=settings.gateway_max_request_bytes,
            preadmission_max_frame_bytes=settings.gateway_preadmission_max_frame_bytes,
            preadmission_buffer_bytes=settings.gateway_preadmission_buffer_bytes), self.gate)
        self._server: Server | None = None
        self._hub = PacerHub()
        self._store: StateStore | None = None
        self.fences = FenceCheck(self._hub.gate, lambda: self.store, lambda: self.sessions)
        self._hub.gate.on_stall = self.fences.on_stall
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()

    # Lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self._store = StateStore(connect_redis(s.redis_url), s.gateway_id,
                                 s.gateway_max_sessions, self._heartbeat,
                                 on_fenced=self.fences.on_fenced, gate=self._hub.gate)
        self._store.start()
        self._hub.start()
        self._server = await serve(
            self._handle, s.gateway_host, s.gateway_port,
            process_request=self._process_request, create_connection=self._connection_class,
            open_timeout=s.gateway_connect_timeout_s,
            max_size=s.gateway_max_message_bytes, max_queue=32, compression=None,
            # Pings are the session's (wire_watch.keepalive: counted, and can be off);
            # a connection not yet admitted is bounded by GATEWAY_CONNECT_TIMEOUT_S instead.
            ping_interval=None,
            close_timeout=2,
        )
        log.info("media gateway %s listening on %s:%d (max %d sessions)", s.gateway_id,
                 s.gateway_host, self.port, s.gateway_max_sessions)
        if s.gateway_keepalive_interval_s <= 0 and s.gateway_idle_timeout_s <= 0:
            log.warning("GATEWAY_KEEPALIVE_INTERVAL_S=0 and GATEWAY_IDLE_TIMEOUT_S=0: a media "
                        "peer that vanishes without closing is only noticed at "
                        "GATEWAY_MAX_CALL_DURATION_S")

    async def stop(self) -> None:
        """Close everything now (after `drain()` for a graceful stop)."""
        self.draining = True
        for session in list(self.sessions):
            session.terminate("drain_timeout")
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self._wait_sessions(5.0)
        await self.fences.stop()
        await self._hub.stop()
        if self._store is not None:
            await self._store.close()

    async def drain(self, timeout: float | None = None) -> bool:
        """Readiness false, refuse new calls, let live calls finish (bounded).
        True if every call ended by itself; the rest are ended with `drain_timeout`."""
        self.draining = True
        limit = self.settings.gateway_drain_timeout_s if timeout is None else timeout
        log.info("draining: %d live sessions, up to %.0f s", len(self.sessions), limit)
        if await self._wait_sessions(limit):
            return True
        for session in list(self.sessions):
            session.terminate("drain_timeout")
        await self._wait_sessions(5.0)
        return False

    async def _wait_sessions(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._no_sessions.wait()
            return True
        except TimeoutError:
            return False

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/media"

    @property
    def store(self) -> StateStore:
        assert self._store is not None, "not started"
        return self._store

    # Admission -----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return (self._server is not None and not self.draining
                and self.slots.used < self.slots.limit)

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == health.HEALTHZ:
            return _answer(conn, health.alive())
        if path == health.READYZ:
            if self.ready:
                return _answer(conn, health.ready())
            return _answer(conn, health.not_ready("draining" if self.draining
                                                  else "at_capacity"))
        if path == health.METRICS:
            return _answer(conn, health.metrics())
        if self.draining:
            metrics.refused(RefusalReason.DRAINING)
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "gateway draining\n")
        if self.slots.used >= self.slots.limit:
            metrics.refused(RefusalReason.CAPACITY)
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "gateway at capacity\n")
        return None

    async def _handle(self, conn: ServerConnection) -> None:
        # `serve(create_connection=...)` makes every connection a MediaConnection.
        assert isinstance(conn, MediaConnection), type(conn)
        s = self.settings
        call = await admit(conn, store=self.store, profiles=self.profiles,
                           gateway_id=s.gateway_id,
                           connect_timeout_s=s.gateway_connect_timeout_s,
                           slots=self.slots)
        if call is None:
            return
        # Admitted: holds a slot, given back below.
        session = MediaSession(conn, SessionDeps(s, self.store, self._hub, self.profiles,
                                                 self.tools, s.gateway_id), call)
        self.sessions.add(session)
        self._no_sessions.clear()
        try:
            await session.serve()
        finally:
            self.sessions.discard(session)
            self.slots.give_back()
            if not self.sessions:
                self._no_sessions.set()

    def _heartbeat(self) -> Heartbeat:
        live = [s for s in self.sessions if s.started]
        return Heartbeat(sessions=len(self.sessions), ready=self.ready,
                         counters={s.call_id: s.counters() for s in live})


async def run_gateway(settings: GatewaySettings) -> int:
    """Process entry point: serve until SIGTERM/SIGINT, then drain and stop."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(settings)
    await gateway.start()
    # Long-lived start-up objects (modules, profiles, sounds) leave the GC's scans: fewer
    # and shorter collection pauses on the audio path.
    gc.freeze()
    gc_pauses.install()
    try:
        await stop.wait()
        log.info("signal received: draining")
        await gateway.drain()
    finally:
        await gateway.stop()
    return 0


def _answer(conn: ServerConnection, probe: health.ProbeAnswer) -> Response:
    """A websockets HTTP response carrying a shared probe answer."""
    response = conn.respond(HTTPStatus(probe.status), "")
    # Headers is a multidict: assignment would add a second header, so replace.
    del response.headers["Content-Type"]
    del response.headers["Content-Length"]
    response.headers["Content-Type"] = probe.content_type
    response.headers["Content-Length"] = str(len(probe.body))
    return dataclasses.replace(response, body=probe.body)
