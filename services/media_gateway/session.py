"""One call's media session: Infobip socket <-> OpenAI Realtime socket, start to end.

Lifecycle (recorded in the session record, contract "Session record"):
`connecting` (token accepted, model socket opening) -> `streaming` (model configured) ->
`draining` (the call is being ended on purpose: goodbye/notice playing, job enqueued,
waiting for the orchestrator to hang up) -> `ended`. The session's life is the Infobip
socket: `run()` returns when it closes, whoever closed it; everything else (model reader,
watchdog, tools, ending sequence) are tasks of the session, cancelled at its end.

How calls end, and why:
- caller hangs up (socket closed by Infobip): `caller_hangup`, unless a tool or timeout had
  already decided the end (`agent_hangup`, `transferred`, `max_duration`, `model_failed`).
- `hang_up` / `transfer_to_human` tools: after the agent's last words were played out, the
  `hangup_call` / `transfer_call` job is enqueued; the orchestrator ends the media leg. If it
  has not after TOOL_END_GRACE_S, we close the socket ourselves.
- idle timeout (no caller frames for IDLE_TIMEOUT_S: Infobip streams frames continuously, so
  this is a dead or half-open peer that cannot hear anything): `hangup_call` job, close now.
- max duration: a short spoken notice, then `hangup_call` (`max_duration`), close after the
  grace period if the orchestrator has not.
- model lost for MODEL_RECONNECT_TIMEOUT_S (hold sound meanwhile): a spoken fallback, then
  `transfer_call` when the profile has a transfer number, else `hangup_call` (`model_failed`).
- caller flooding (audio above CALLER_FLOOD_RATIO x real time, limits.py): the connection
  cut it off with close 1008; `hangup_call` (`caller_flood`).

Admission (`admit`) refuses with a close code and a short reason, counted under a fixed
`RefusalReason`: every value taken from `websocket:connected` is validated first (rate,
token and call id formats), then a session slot is taken, then the token is claimed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from services.media_gateway import metrics, relay, sounds
from services.media_gateway.bargein import CLEAR, BargeIn
from services.media_gateway.config import GatewaySettings
from services.media_gateway.limits import CallerMeter, SessionSlots, TokenBucket
from services.media_gateway.metrics import Limited, RefusalReason
from services.media_gateway.model_link import ModelLink
from services.media_gateway.pacer import PacerHub, Sender
from services.media_gateway.state import StateStore, TokenStoreUnavailable, now_ms
from services.media_gateway.tools import ToolCall, ToolRegistry, ToolResult
from shared import realtime_events as rt
from shared.audio.playout import Playout
from shared.audio.resampler import StreamResampler
from shared.infobip_media import BadSampleRate, Connected, MediaProtocolError, parse_control
from shared.jobs import HANGUP_CALL, TRANSFER_CALL
from shared.logging_setup import call_id_var
from shared.profiles import AgentProfile, ProfileBook

log = logging.getLogger(__name__)

MODEL_RATE = rt.MODEL_RATE
_HISTORY_LINES = 60
#: The orchestrator's media token is `secrets.token_urlsafe(24)` (URL-safe base64, 32
#: characters; services/call_orchestrator/bridge.py); anything outside this shape is refused
#: before Redis is asked.
MEDIA_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: Infobip call ids are UUIDs; this admits those and the test suites' ids, and keeps
#: anything that would be awkward in a Redis key or a log line out.
CALL_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455 7.4.1 (IANA registry): server overloaded


class SessionState(StrEnum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    DRAINING = "draining"
    ENDED = "ended"


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
    def __init__(self, conn: ServerConnection, deps: SessionDeps) -> None:
        self.conn = conn
        self.deps = deps
        self.settings = deps.settings
        self.loop = asyncio.get_running_loop()
        self.state = SessionState.CONNECTING
        self.call_id = ""
        self.dialog_id = ""
        self.rate = 0
        self.profile = AgentProfile()
        self.end_reason: str | None = None
        self.frames_in = 0
        self.malformed_frames = 0
        self.last_audio_in = self.loop.time()
        self.connected_at = self.loop.time()
        self.history: deque[tuple[str, str]] = deque(maxlen=_HISTORY_LINES)
        self.active_response: str | None = None
        self.last_response_request: str | None = None
        self.ending_notice = False
        self._want_response = False
        self._ending = False
        self._tool_calls: dict[str, list[ToolCall]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closer: asyncio.Task[None] | None = None
        self.meter: CallerMeter | None = None  # set once admitted (needs the rate)
        self.dtmf_bucket: TokenBucket | None = None
        self.control_notes = 0  # malformed/unknown control messages logged so far

    # Life ----------------------------------------------------------------------------------

    async def run(self, slots: SessionSlots | None = None) -> None:
        """Admit, then serve the call until the Infobip socket closes."""
        if not await self.admit(slots):
            return
        try:
            await self.serve()
        finally:
            if slots is not None:
                slots.give_back()

    async def serve(self) -> None:
        """Serve an admitted call until the Infobip socket closes."""
        self._start()
        try:
            await relay.caller_pump(self)
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
        if getattr(self.conn, "cut_reason", None) != Limited.FLOOD_CUTOFF or self._ending:
            return
        log.warning("caller sent faster than %.1fx real time: call cut off",
                    self.settings.caller_flood_ratio)
        self.end_reason = "caller_flood"
        self.deps.store.enqueue_job(HANGUP_CALL, self.call_id, "caller_flood")

    async def admit(self, slots: SessionSlots | None = None) -> bool:
        """`websocket:connected` first, with a valid one-time media token (contract "Media
        token"); otherwise close with a code and reason, before anything is relayed. True
        means admitted, holding one of `slots` (given back by whoever serves the call)."""
        deadline = getattr(self.conn, "created_at", self.loop.time()) + \
            self.settings.connect_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                first = await self.conn.recv()
        except TimeoutError:
            return await self._refuse(RefusalReason.TIMEOUT, "no websocket:connected", 1008)
        except ConnectionClosed as exc:
            return self._closed_before_admission(exc)
        if not isinstance(first, str):
            return await self._refuse(RefusalReason.PROTOCOL,
                                      "expected websocket:connected first", 1008)
        try:
            control = parse_control(first)
        except BadSampleRate as exc:
            return await self._refuse(RefusalReason.BAD_RATE, str(exc), 1003)
        except MediaProtocolError as exc:
            return await self._refuse(RefusalReason.PROTOCOL,
                                      f"bad websocket:connected: {exc}", 1008)
        if not isinstance(control, Connected):
            return await self._refuse(RefusalReason.PROTOCOL,
                                      "expected websocket:connected first", 1008)
        custom = control.custom_data
        token, call_id = custom.get("cbToken", ""), custom.get("cbCallId", "")
        if CALL_ID.fullmatch(call_id):
            call_id_var.set(call_id)
        if not token:
            return await self._refuse(RefusalReason.BAD_TOKEN, "missing media token", 1008)
        if not call_id:
            return await self._refuse(RefusalReason.BAD_TOKEN, "missing cbCallId", 1008)
        if not CALL_ID.fullmatch(call_id):
            return await self._refuse(RefusalReason.PROTOCOL, "malformed cbCallId", 1008)
        if not MEDIA_TOKEN.fullmatch(token):
            return await self._refuse(RefusalReason.BAD_TOKEN, "malformed media token", 1008)
        if slots is not None and not slots.try_take():
            return await self._refuse(RefusalReason.CAPACITY, "gateway at capacity",
                                      _CLOSE_TRY_AGAIN_LATER)
        if not await self._claim(token, call_id, custom.get("cbProfile")):
            if slots is not None:
                slots.give_back()
            return False
        self.rate = control.sample_rate
        return True

    async def _claim(self, token: str, call_id: str, asked_profile: str | None) -> bool:
        try:
            record, dialog_id = await self.deps.store.claim_media_token(token, call_id)
        except TokenStoreUnavailable as exc:
            log.error("media token check failed, Redis unavailable: %s", exc)
            return await self._refuse(RefusalReason.UNAVAILABLE, "token store unavailable",
                                      1011)
        if record is None:
            return await self._refuse(RefusalReason.BAD_TOKEN,
                                      "unknown or already used media token", 1008)
        if record.get("call_id") != call_id:
            return await self._refuse(RefusalReason.BAD_TOKEN,
                                      "media token belongs to another call", 1008)
        expires_at = record.get("expires_at")
        if not isinstance(expires_at, int | float) or expires_at < time.time():
            return await self._refuse(RefusalReason.EXPIRED, "media token expired", 1008)
        self.call_id = call_id
        self.dialog_id = dialog_id
        # The token record (written by the orchestrator) names the profile; the peer's
        # cbProfile is only a fallback, and an unknown name gives the default profile.
        profile = record.get("profile")
        self.profile = self.deps.profiles.get(
            profile if isinstance(profile, str) and profile else asked_profile)
        return True

    def _closed_before_admission(self, exc: ConnectionClosed) -> bool:
        """The socket closed before its first message: cut off by a pre-admission limit
        (ws_fastpath), failed by websockets (1009: a frame above the pre-admission size),
        or closed by the peer."""
        cut = getattr(self.conn, "cut_reason", None)
        sent = exc.sent.code if exc.sent is not None else None
        if isinstance(cut, RefusalReason):
            reason = cut
        elif sent == 1009:
            reason = RefusalReason.TOO_LARGE
        elif sent is not None and exc.rcvd is None:
            reason = RefusalReason.PROTOCOL  # websockets failed the connection
        else:
            reason = RefusalReason.OTHER  # the peer went away
        if reason is not RefusalReason.CAPACITY:  # an eviction was counted by the gate
            metrics.refused(reason)
        log.info("media connection closed before admission: %s", reason.value)
        return False

    async def _refuse(self, reason: RefusalReason, detail: str, code: int) -> bool:
        metrics.refused(reason)
        detail = detail[:100]  # a close reason is at most 123 bytes (RFC 6455 5.5)
        log.warning("media connection refused (%s): %s", reason.value, detail)
        await self.conn.close(code, detail)
        return False

    def _start(self) -> None:
        s = self.settings
        self.connected_at = self.last_audio_in = now = self.loop.time()
        self.meter = CallerMeter(self.rate, s.caller_audio_burst_ms, s.caller_flood_ratio,
                                 s.caller_flood_window_s, now)
        self.dtmf_bucket = TokenBucket(s.dtmf_max_per_s, s.dtmf_max_per_s, now)
        self.resample_in = StreamResampler(self.rate, MODEL_RATE, s.resample_quality)
        self.resample_out = StreamResampler(MODEL_RATE, self.rate, s.resample_quality)
        self.playout = Playout(self.rate)
        self.sender = Sender(self.conn, self.playout, s.latency_sample_every,
                             self._on_first_audio)
        # Captures the deque, not `self`: a part referring back to the session is a cycle,
        # freed only by a full GC, which this process almost never runs (its hot path
        # allocates bytes, not containers), so every call's soxr filters and buffers piled
        # up (fault suite scenario 9: +73 kB RSS per call). Refcounting must free a session.
        history = self.history
        self.link = ModelLink(s, self.profile, self.deps.tools.schemas(self.profile.tools),
                              lambda: history)
        self.barge = BargeIn(self.playout, self.sender, self.link, self.resample_out,
                             s.playout_allowance_ms,
                             enabled=self.profile.turn_detection.interrupt_response)
        self.deps.hub.add(self.sender)
        metrics.ACTIVE_SESSIONS.inc()
        store = self.deps.store
        store.update(self.call_id, call_id=self.call_id, gateway_id=self.deps.gateway_id,
                     dialog_id=self.dialog_id, profile=self.profile.name, sample_rate=self.rate,
                     state=self.state.value, started_at=now_ms(), frames_in=0, frames_out=0,
                     barge_ins=0, truncates=0)
        store.add_member(self.call_id)
        log.info("media session started: %d Hz, profile %s", self.rate, self.profile.name)
        self._spawn(self._model_main(), "model")
        self._spawn(self._watchdog(), "watchdog")

    async def _finish(self) -> None:
        self.state = SessionState.ENDED
        reason = self.end_reason or "caller_hangup"
        self.end_reason = reason
        self.link.closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.link.close()
        self.deps.hub.remove(self.sender)
        self.sender.on_first_audio = None  # a bound method of self: a cycle (see `_start`)
        # soxr filters are most of a call's native memory (~160 kB): free them now.
        self.resample_in.close()
        self.resample_out.close()
        store = self.deps.store
        store.update(self.call_id, state=self.state.value, ended_at=now_ms(), end_reason=reason,
                     **self.counters())
        store.remove_member(self.call_id)
        metrics.ACTIVE_SESSIONS.dec()
        metrics.SESSIONS.labels(reason).inc()
        dropped = self.meter.dropped if self.meter is not None else 0
        if dropped:  # counted here, not per frame: the per-frame path stays arithmetic
            metrics.limited(Limited.AUDIO_DROPPED, dropped)
        log.info("media session ended: %s", reason,
                 extra={**self.counters(), "frames_dropped": dropped})
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
            self.terminate("error", code=1011)

    def counters(self) -> dict[str, int]:
        return {"frames_in": self.frames_in, "frames_out": self.playout.frames_sent,
                "barge_ins": self.barge.barge_ins, "truncates": self.barge.truncates}

    # Model ---------------------------------------------------------------------------------

    async def _model_main(self) -> None:
        ok = await self.link.run(lambda raw, at: relay.on_model_event(self, raw, at),
                                 self._on_model_lost, self._on_model_open)
        if not ok and not self._ending:
            log.error("model unavailable for %.0f s: fallback", self.settings.
                      model_reconnect_timeout_s)
            transfer = bool(self.profile.transfer_number)
            self._begin_ending(
                "model_failed", TRANSFER_CALL if transfer else HANGUP_CALL, "model_failed",
                sounds.notice(sounds.FALLBACK_TRANSFER if transfer else sounds.FALLBACK_GOODBYE,
                              self.rate))

    def _on_model_open(self, first: bool) -> None:
        self.playout.set_filler(None)
        self._tool_calls.clear()
        # the greeting (first) or the resume (re-seed) response.create was sent
        self.active_response = "pending" if (self.profile.greeting or not first) else None
        if first and self.state is SessionState.CONNECTING:
            self.set_state(SessionState.STREAMING)

    def _on_model_lost(self) -> None:
        self.playout.set_filler(sounds.hold(self.rate, self.settings.hold_limit_ms))
        self.active_response = None
        self._want_response = False

    def _on_first_audio(self) -> None:
        metrics.FIRST_AUDIO.observe(self.loop.time() - self.connected_at)
        self.record_update(first_audio_at=now_ms())

    def request_response(self) -> None:
        """`response.create`, or after the active response is done (one at a time)."""
        if self.active_response is not None:
            self._want_response = True
            return
        event = rt.response_create()
        self.last_response_request = event["event_id"]
        if self.link.send(event):
            self.active_response = "pending"

    def on_response_done(self, response_id: str | None, status: str) -> None:
        self.active_response = None
        calls = self._tool_calls.pop(response_id or "", [])
        if status == "cancelled":
            if calls:
                log.info("response cancelled: not running %s", [c.name for c in calls])
        else:
            for call in calls:
                self._spawn(self._run_tool(call), f"tool-{call.name}")
        if self._want_response:
            self._want_response = False
            self.request_response()

    def on_function_call(self, event: rt.FunctionCallDone) -> None:
        call = ToolCall.parse(event.name, event.call_id, event.arguments, event.response_id)
        self._tool_calls.setdefault(event.response_id or "", []).append(call)

    async def _run_tool(self, call: ToolCall) -> None:
        tool = self.deps.tools.get(call.name)
        metrics.TOOL_CALLS.labels(call.name if tool else "unknown").inc()
        respond = True
        if tool is None:
            output = f"There is no tool named {call.name}."
        else:
            try:
                result = await tool.handler(call, self)
            except Exception:
                log.exception("tool %s failed", call.name)
                result = "The tool failed; apologise and continue without it."
            output, respond = ((result.output, result.respond) if isinstance(result, ToolResult)
                               else (result, tool.respond))
        self.record_line("system", f"tool {call.name}: {output}")
        self.link.send(rt.function_call_output(call.call_id, output))
        if respond:
            self.request_response()

    # Tool host and ending ------------------------------------------------------------------

    async def wait_played_out(self, timeout: float) -> bool:
        """Until no agent audio is queued or still sounding at Infobip (bounded)."""
        waiter = asyncio.Event()
        self.sender.idle_waiter = waiter
        try:
            async with asyncio.timeout(timeout):
                await waiter.wait()
            return True
        except TimeoutError:
            return False
        finally:
            if self.sender.idle_waiter is waiter:
                self.sender.idle_waiter = None

    def end_call(self, job: str, job_reason: str, end_reason: str) -> None:
        self._begin_ending(end_reason, job, job_reason, None)

    def _begin_ending(self, end_reason: str, job: str | None, job_reason: str,
                      notice: bytes | None, grace: float | None = None) -> None:
        if self._ending:
            return
        self._ending = True
        self.end_reason = end_reason
        self.set_state(SessionState.DRAINING)
        grace = self.settings.tool_end_grace_s if grace is None else grace
        self._spawn(self._ending_sequence(job, job_reason, notice, grace), "ending")

    async def _ending_sequence(self, job: str | None, job_reason: str, notice: bytes | None,
                               grace: float) -> None:
        self.link.muted = True  # the agent has said its last words
        if notice is not None:
            self.ending_notice = True  # model audio is ignored from here on
            await self.link.close()
            now = self.loop.time()
            if self.playout.playing(now):
                self.sender.send_text(CLEAR)
            self.playout.clear()
            self.playout.set_filler(None)
            self.playout.push(notice, "notice")
            self.playout.pad_item()
            self.sender.kick(now, now)
            await self.wait_played_out(len(notice) / self.playout.bytes_per_ms / 1000 + 5.0)
        if job is not None:
            self.deps.store.enqueue_job(job, self.call_id, job_reason)
        closed = True
        try:
            async with asyncio.timeout(grace):
                await self.conn.wait_closed()
        except TimeoutError:
            closed = False
        # Not inside the `except`: a cancel (`_finish`) there chains the TimeoutError, whose
        # traceback holds asyncio's Timeout, which holds this task: a cycle keeping `self`.
        if not closed:
            await self.conn.close(1000, "call ended")

    def terminate(self, end_reason: str, code: int = 1001, job: bool = True) -> None:
        """End now (drain timeout, internal error): hang-up job, close the socket."""
        if self.state is SessionState.ENDED:
            return
        self.end_reason = self.end_reason or end_reason
        if job:
            self.deps.store.enqueue_job(HANGUP_CALL, self.call_id, end_reason)
        if self._closer is None:
            self._closer = self.loop.create_task(self.conn.close(code, end_reason))

    async def _watchdog(self) -> None:
        s = self.settings
        step = max(0.05, min(1.0, s.idle_timeout_s / 4, s.max_call_duration_s / 4))
        for _ in range(int((s.max_call_duration_s + s.idle_timeout_s) / step) + 10):
            await asyncio.sleep(step)  # a periodic check, not synchronisation
            now = self.loop.time()
            if self._ending:
                return
            if now - self.last_audio_in >= s.idle_timeout_s:
                log.warning("no caller audio for %.1f s: ending the call", s.idle_timeout_s)
                self._begin_ending("idle_timeout", HANGUP_CALL, "idle_timeout", None, grace=0)
                return
            if now - self.connected_at >= s.max_call_duration_s:
                log.info("maximum call duration reached")
                self._begin_ending("max_duration", HANGUP_CALL, "max_duration",
                                   sounds.notice(sounds.MAX_DURATION, self.rate))
                return

    # Records -------------------------------------------------------------------------------

    def set_state(self, state: SessionState) -> None:
        self.state = state
        self.record_update(state=state.value)

    def record_update(self, **fields: str | int) -> None:
        self.deps.store.update(self.call_id, **fields)

    def record_line(self, role: str, text: str) -> None:
        self.history.append((role, text))
        self.deps.store.transcript(self.call_id, role, text)
