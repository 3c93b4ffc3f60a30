"""One admitted call's media session: its lifecycle, its tools, and how it ends.

Built once `admission.admit` accepted the connection, from the parts that do the work:
`CallerOutput` (what the caller hears), `ModelLink` (the model socket), `BargeIn`, and the
`Relay` (both hot directions), which reaches back here only through `relay.RelayHost`.

Lifecycle (`state.SessionState`, the session record's `state`): `connecting` (model socket
opening) -> `streaming` (model configured) -> `draining` (the call is being ended on
purpose: goodbye/notice playing, job enqueued, waiting for the orchestrator to hang up) ->
`ended`. The session's life is the Infobip socket: `serve()`
returns when it closes, whoever closed it; everything else (model reader, watchdog,
keepalive, tools, ending sequence) are tasks of the session, cancelled at its end.

A call re-bridged from a lost gateway (`Admitted.resume`, services/call_orchestrator/
rebridge.py) starts differently: the conversation so far is read from Redis, the caller
hears the hold sound until the agent speaks again, and the model is re-seeded and asked to
pick up where it was instead of greeting. A session whose call moved on to a newer media
generation is fenced (`fence()`): it ends without another frame or record write.

How and why calls end: ending.py.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import ConnectionClosed

from callbridge.services.media_gateway import metrics, sounds
from callbridge.services.media_gateway.admission import Admitted
from callbridge.services.media_gateway.bargein import BargeIn
from callbridge.services.media_gateway.caller_output import CallerOutput
from callbridge.services.media_gateway.config import GatewaySettings
from callbridge.services.media_gateway.ending import ending_sequence
from callbridge.services.media_gateway.metrics import Limited
from callbridge.services.media_gateway.model_link import ModelLink
from callbridge.services.media_gateway.pacer import PacerHub
from callbridge.services.media_gateway.relay import Relay
from callbridge.services.media_gateway.state import CallRecord, SessionState, StateStore
from callbridge.services.media_gateway.tools import ToolCall, ToolRegistry, run_tool
from callbridge.services.media_gateway.turns import ResponseTurns
from callbridge.services.media_gateway.watchdog import IDLE_TIMEOUT, MAX_DURATION, watchdog
from callbridge.services.media_gateway.wire_watch import KEEPALIVE_CLOSE_CODE, keepalive
from callbridge.services.media_gateway.ws_fastpath import MediaConnection
from callbridge.shared import realtime_events as rt
from callbridge.shared import ws_close_codes as close
from callbridge.shared.jobs import HANGUP_CALL, TRANSFER_CALL
from callbridge.shared.profiles import ProfileBook
from callbridge.shared.redis_values import epoch_ms_text

log = logging.getLogger(__name__)


@dataclass
class SessionDeps:
    """What every session of a gateway shares (built once by the server)."""

    settings: GatewaySettings
    store: StateStore
    hub: PacerHub
    profiles: ProfileBook
    tools: ToolRegistry
    gateway_id: str


class MediaSession:
    """Implements `relay.RelayHost` (model callbacks) and `tools.ToolHost`."""

    def __init__(self, conn: MediaConnection, deps: SessionDeps, call: Admitted) -> None:
        s = self.settings = deps.settings
        self.conn = conn
        self.deps = deps
        self.loop = asyncio.get_running_loop()
        self.state = SessionState.CONNECTING
        self.call_id, self.dialog_id, self.rate = call.call_id, call.dialog_id, call.rate
        self.generation, self.resume = call.generation, call.resume
        self.fenced = False
        self.profile = call.profile
        self.wire = call.wire
        self.end_reason: str | None = None
        self.connected_at = self.loop.time()
        self.record = CallRecord(deps.store, self.call_id)
        self._ending = False
        self._started = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closer: asyncio.Task[None] | None = None
        self.output = CallerOutput(conn, self.rate, deps.hub, quality=s.gateway_resample_quality,
                                   sample_every=s.gateway_latency_sample_every,
                                   on_first_audio=self._on_first_audio,  # dropped at the end
                                   on_clear=self.wire.on_clear_sent)
        # Captures the deque, not `self`: a part referring back to the session is a cycle,
        # freed only by a full GC, which this process almost never runs (its hot path
        # allocates bytes, not containers), so every call's soxr filters and buffers piled
        # up (+73 kB RSS per call). Refcounting must free a session.
        history = self.record.history
        self.link = ModelLink(s, self.profile, deps.tools.schemas(self.profile.tools),
                              lambda: history, resume=call.resume)
        self.turns = ResponseTurns(self.link)
        self.barge = BargeIn(self.output, self.link, s.gateway_playout_allowance_ms,
                             enabled=self.profile.turn_detection.interrupt_response)
        self.relay = Relay(self, conn, self.link, self.output, self.barge, self.turns,
                           self.record, self.wire, s, self.rate)

    @property
    def started(self) -> bool:
        """True from `start()` (relaying, on the record) until the end."""
        return self._started and self.state is not SessionState.ENDED

    # Life ----------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Serve the call until the Infobip socket closes."""
        if self.resume:
            # Before the model opens: the re-seed is the conversation so far.
            self.record.history.extend(await self.deps.store.load_history(
                self.call_id, self.record.history.maxlen or 60))
        self.start()
        try:
            await self.relay.pump()
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("media session failed")
            self.end_reason = self.end_reason or "error"
        finally:
            self._on_cut_off()
            await self._finish()

    def _on_cut_off(self) -> None:
        """The connection cut the caller off (limits.py): say why, and hang the call up."""
        if self.conn.cut_reason != Limited.FLOOD_CUTOFF or self._ending:
            return
        log.warning("caller sent faster than %.1fx real time: call cut off",
                    self.settings.gateway_caller_flood_ratio)
        self.end_reason = "caller_flood"
        self.deps.store.enqueue_job(HANGUP_CALL, self.call_id, "caller_flood")

    def start(self) -> None:
        s = self.settings
        self.connected_at = self.relay.last_audio_in = self.loop.time()
        if self.resume:  # the caller hears the hold sound until the agent speaks again
            self.output.set_filler(sounds.hold(self.rate, s.gateway_hold_limit_ms))
            metrics.RESUMED.inc()
        self.output.start()
        self._started = True
        metrics.ACTIVE_SESSIONS.inc()
        self.deps.store.serve(self.call_id, self.generation)
        resumed = {"resumed_at": epoch_ms_text(), "first_audio_at": ""} if self.resume else {}
        self.record.open(gateway_id=self.deps.gateway_id, dialog_id=self.dialog_id,
                         profile=self.profile.name, sample_rate=self.rate, state=self.state.value,
                         media_gen=self.generation, **resumed)
        log.info("media session %s: %d Hz, profile %s",
                 "resumed (re-bridged)" if self.resume else "started", self.rate,
                 self.profile.name)
        self._spawn(self._model_main(), "model")
        self._spawn(self._watchdog(), "watchdog")
        if s.gateway_keepalive_interval_s > 0:
            self._spawn(keepalive(self.conn, s.gateway_keepalive_interval_s,
                                  s.gateway_keepalive_timeout_s,
                                  self.wire, self._on_peer_silent), "keepalive")

    async def _finish(self) -> None:
        self.state = SessionState.ENDED
        reason = self.end_reason = self.end_reason or "caller_hangup"
        self.link.closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.link.close()
        # Leaves the pacer; soxr filters are most of a call's native memory (~160 kB).
        self.output.close()
        self.relay.close()
        if not self.fenced:  # a fenced session's record belongs to its successor
            self.record.close(reason, self.counters())
        metrics.ACTIVE_SESSIONS.dec()
        metrics.SESSIONS.labels(reason).inc()
        dropped = self.relay.frames_dropped
        if dropped:  # counted here, not per frame: the per-frame path stays arithmetic
            metrics.limited(Limited.AUDIO_DROPPED, dropped)
        log.info("media session ended: %s", reason,
                 extra={**self.counters(), "frames_dropped": dropped})
        if self.fenced:
            self.conn.transport.abort()  # not even a close frame: the call is elsewhere now
            return
        self.deps.store.wire_observation(self.wire.finish(reason))
        await self.conn.close()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro, name=f"{name}:{self.call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("session task %s failed", task.get_name(), exc_info=task.exception())
            self.terminate("error", code=close.INTERNAL_ERROR)

    def counters(self) -> dict[str, int]:
        return {"frames_in": self.relay.frames_in, "frames_out": self.output.frames_sent,
                "barge_ins": self.barge.barge_ins, "truncates": self.barge.truncates}

    # Model ---------------------------------------------------------------------------------

    async def _model_main(self) -> None:
        ok = await self.link.run(self.relay.on_model_event, self._on_model_lost,
                                 self._on_model_open)
        if not ok and not self._ending:
            log.error("model unavailable for %.0f s: fallback",
                      self.settings.gateway_model_reconnect_timeout_s)
            transfer = bool(self.profile.transfer_number)
            self._begin_ending(
                "model_failed", TRANSFER_CALL if transfer else HANGUP_CALL, "model_failed",
                sounds.notice(sounds.FALLBACK_TRANSFER if transfer else sounds.FALLBACK_GOODBYE,
                              self.rate))

    def _on_model_open(self, first: bool) -> None:
        if not (first and self.resume):  # a resumed call holds until the agent speaks
            self.output.set_filler(None)
        # the greeting (first) or the resume (re-seed) response.create was sent
        self.turns.on_model_open(bool(self.profile.greeting) or not first or self.resume)
        if first and self.state is SessionState.CONNECTING:
            self.set_state(SessionState.STREAMING)

    def _on_model_lost(self) -> None:
        self.output.set_filler(sounds.hold(self.rate, self.settings.gateway_hold_limit_ms))
        self.turns.on_model_lost()

    def _on_first_audio(self) -> None:
        if self.resume:
            self.output.set_filler(None)  # the agent is back: the hold sound ends
        metrics.FIRST_AUDIO.observe(self.loop.time() - self.connected_at)
        self.record.update(first_audio_at=epoch_ms_text())

    def on_response_done(self, response_id: str | None, status: str) -> None:
        """`relay.RelayHost`: run the tool calls of a response that was not cancelled."""
        for call in self.turns.on_done(response_id, status):
            self._spawn(self._run_tool(call), f"tool-{call.name}")

    async def _run_tool(self, call: ToolCall) -> None:
        output, respond = await run_tool(self.deps.tools, call, self)
        self.record.line("system", f"tool {call.name}: {output}")
        self.link.send(rt.function_call_output(call.call_id, output))
        if respond:
            self.turns.request()

    # Tool host and ending ------------------------------------------------------------------

    async def wait_played_out(self, timeout: float) -> bool:
        """Until no agent audio is queued or still sounding at Infobip (bounded)."""
        return await self.output.wait_played_out(timeout)

    def end_call(self, job: str, job_reason: str, end_reason: str) -> None:
        self._begin_ending(end_reason, job, job_reason, None)

    def _begin_ending(self, end_reason: str, job: str | None, job_reason: str,
                      notice: bytes | None, grace: float | None = None) -> None:
        if self._ending:
            return
        self._ending = True
        self.end_reason = end_reason
        self.set_state(SessionState.DRAINING)
        grace = self.settings.gateway_tool_end_grace_s if grace is None else grace
        self._spawn(ending_sequence(self.conn, self.link, self.output, self.relay,
                                    self.deps.store, self.call_id, job, job_reason, notice,
                                    grace), "ending")

    def fence(self) -> None:
        """The call was re-bridged to a newer media generation: end without a frame, a job
        or a record write (the pacer's gate already holds this process's audio)."""
        if self.fenced or self.state is SessionState.ENDED:
            return
        self.fenced = True
        self.end_reason = "fenced"
        self._ending = True
        self.link.muted = True
        self.output.silence()
        self.deps.store.forget(self.call_id)
        self.conn.transport.abort()

    def terminate(self, end_reason: str, code: int = close.GOING_AWAY, job: bool = True) -> None:
        """End now (drain timeout, internal error): hang-up job, close the socket."""
        if self.state is SessionState.ENDED or self.fenced:
            return
        self.end_reason = self.end_reason or end_reason
        if job:
            self.deps.store.enqueue_job(HANGUP_CALL, self.call_id, end_reason)
        if self._closer is None:
            self._closer = self.loop.create_task(self.conn.close(code, end_reason))

    def _on_peer_silent(self) -> None:
        """A ping went unanswered: the peer (or the path to it) is gone."""
        self.terminate("keepalive_timeout", code=KEEPALIVE_CLOSE_CODE)

    async def _watchdog(self) -> None:
        why = await watchdog(self.settings, self.relay, self.connected_at, lambda: self._ending)
        if why == IDLE_TIMEOUT:
            self._begin_ending(why, HANGUP_CALL, why, None, grace=0)
        elif why == MAX_DURATION:
            self._begin_ending(why, HANGUP_CALL, why, sounds.notice(sounds.MAX_DURATION, self.rate))

    def set_state(self, state: SessionState) -> None:
        self.state = state
        self.record.update(state=state.value)
