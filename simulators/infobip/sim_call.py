"""One simulated call's life: ringing, dialog, media, hang-up — one task, one command queue.

Everything that can end a call (the caller's script, the cap, REST hang-ups, the gateway
closing the media socket) becomes a command processed in order by the call's life task, so
the platform's events come out in one consistent order. Semantics (source:
Infobip's Calls API reference (https://www.infobip.com/docs/api)): a dialog bridges the parent (the
caller) to a child;
closing the media socket ends the child call, and with `propagationOptions.childCallHangup`
(default true) the parent too (*inference* in the reference); `POST .../dialogs/{id}/hangup`
ends every call in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from callbridge.shared.logging_setup import call_id_var

from .calls import (
    CANCELLED,
    NETWORK_ERROR,
    NORMAL_HANGUP,
    CallState,
    DialogState,
    Identity,
    call_end_event,
    dialog_event,
    live_call_event,
)
from .media_leg import MediaLeg, MediaLegOptions
from .script import CallScript, converse
from .webhooks import OrderedSender, WebhookPoster

log = logging.getLogger(__name__)

#: Bound on waiting for the last events to be delivered once a call ended.
FLUSH_TIMEOUT_S = 30.0

_Command = tuple[str, str, "asyncio.Future[None] | None"]


class SimCall:
    """A caller placed by the simulator. See `InfobipSimulator.place_call`."""

    def __init__(self, script: CallScript, ident: Identity, api_base_url: str,
                 poster: WebhookPoster, media_options: MediaLegOptions | None = None) -> None:
        self.script = script
        #: how this caller's media client departs from the assumed protocol (default: not)
        self.media_options = media_options or MediaLegOptions()
        self.ident = ident
        self.api_base_url = api_base_url
        self.parent = CallState(endpoint=script.endpoint(), from_=script.from_number,
                                to=script.to_number, direction="INBOUND", state="RINGING")
        self.call_id = self.parent.id
        self.timeline: dict[str, float] = {}
        self.events_posted: list[dict[str, Any]] = []
        self.dialogs: list[DialogState] = []
        self.leg: MediaLeg | None = None
        #: every media leg of the call, oldest first (a re-bridged call has several)
        self.legs: list[MediaLeg] = []
        self.end_reason: str | None = None
        self.dialog_failures: list[str] = []
        self.placed_at = time.time()
        self._sender = OrderedSender(poster, self._delivered)
        self._commands: asyncio.Queue[_Command] = asyncio.Queue()
        self._parent_ended = asyncio.Event()
        self._finished = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._timers: list[asyncio.TimerHandle] = []

    # --- what tests read ---------------------------------------------------------------

    @property
    def dialog(self) -> DialogState | None:
        return self.dialogs[-1] if self.dialogs else None

    @property
    def dialog_id(self) -> str | None:
        return self.dialog.id if self.dialog else None

    @property
    def state(self) -> str:
        return self.parent.state

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def clears(self) -> list[float]:
        return self.leg.clears if self.leg else []

    def received_pcm(self) -> bytes:
        return self.leg.received_pcm() if self.leg else b""

    def events_of(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events_posted if e.get("type") == event_type]

    async def wait_finished(self, timeout: float = 60.0) -> bool:
        """Wait until the call ended and its last events were delivered; TimeoutError
        (saying where it stuck) otherwise."""
        try:
            await asyncio.wait_for(self._finished.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"call {self.call_id} not finished after {timeout}s: state "
                               f"{self.state}, dialog {self.dialog and self.dialog.state}, "
                               f"timeline {sorted(self.timeline)}") from None
        return True

    # --- platform side -------------------------------------------------------------------

    def start(self) -> None:
        token = call_id_var.set(self.call_id)  # copied into the tasks created here
        try:
            self.timeline["webhook_sent"] = time.time()
            self._emit(live_call_event(self.ident, "CALL_RECEIVED", self.parent,
                                       self.api_base_url))
            self._tasks["life"] = asyncio.create_task(self._life(),
                                                      name=f"sim-call-{self.call_id}")
        finally:
            call_id_var.reset(token)

    def _emit(self, event: dict[str, Any]) -> None:
        log.info("event %s (call %s)", event["type"], event.get("callId", "-"))
        self.events_posted.append(event)
        self._sender.emit(event)

    def _delivered(self, event: dict[str, Any], status: int | None) -> None:
        if event.get("type") == "CALL_RECEIVED" and status is not None and status < 300:
            self.timeline.setdefault("webhook_acked", time.time())

    def answer(self) -> None:
        """POST /calls/1/calls/{id}/answer on the caller's call."""
        if self.parent.state in ("RINGING", "CALLING"):
            self.parent.answer()
            self._emit(live_call_event(self.ident, "CALL_ESTABLISHED", self.parent,
                                       self.api_base_url))

    async def request(self, kind: str, arg: str = "", wait_s: float = 2.0) -> None:
        """Hand a command to the life task and wait (bounded) until it was processed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._commands.put_nowait((kind, arg, fut))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(fut), wait_s)

    def add_dialog(self, dialog: DialogState, requested_at: float | None = None) -> None:
        """A dialog was created through REST. A still-active dialog is replaced: its child
        ends (hangupSource API) without ending the caller (*unverified*: the reference does
        not say what the platform does; this lets a transfer follow the agent's dialog)."""
        old = self.dialog
        if old is not None and old.active:
            self._end_child(old, "API", "API", propagate=False)
            self._close_leg_soon("platform")
        self.dialogs.append(dialog)
        self.timeline.setdefault("dialog_requested", requested_at or time.time())
        self._tasks[f"dialog-{dialog.id}"] = asyncio.create_task(self._run_dialog(dialog))

    async def _run_dialog(self, dialog: DialogState) -> None:
        call_id_var.set(self.call_id)
        self._emit(dialog_event(self.ident, "DIALOG_CREATED", dialog, self.api_base_url))
        endpoint_type = dialog.child.endpoint.get("type")
        if endpoint_type != "WEBSOCKET" or not self.script.connect_to_media:
            self._establish(dialog)
            if endpoint_type == "PHONE":
                self._commands.put_nowait(("transferred", dialog.id, None))
            return
        assert dialog.config is not None
        rate = int(dialog.config["sampleRate"])
        leg = MediaLeg(dialog.config["url"], rate, dialog.child.custom_data,
                       caller_pcm=self.script.caller_pcm(rate), marks=self.timeline,
                       autoplay=False, options=self.media_options)
        self.leg = leg
        self.legs.append(leg)
        try:
            await leg.connect()
        except Exception as exc:
            log.warning("media WebSocket to %s failed: %s", dialog.config["url"], exc)
            self.dialog_failures.append(f"{type(exc).__name__}: {exc}")
            if dialog.active:
                dialog.child.end("FAILED", NETWORK_ERROR, "PLATFORM")
                self._emit(call_end_event(self.ident, "CALL_FAILED", dialog.child))
                dialog.end("FAILED", NETWORK_ERROR, "CHILD_ENDPOINT")
                self._emit(dialog_event(self.ident, "DIALOG_FAILED", dialog))
            return
        if not dialog.active:  # ended while connecting
            await leg.hangup(by="platform")
            return
        self._establish(dialog)
        self._commands.put_nowait(("media_up", dialog.id, None))
        await leg.wait_closed()
        if leg.closed_by in ("server", "lost"):
            log.info("gateway closed the media socket: %s %s", leg.close_code, leg.close_reason)
            self._commands.put_nowait(("media_gone", dialog.id, None))

    def _establish(self, dialog: DialogState) -> None:
        """The child answered: the parent is answered too when it was still ringing."""
        if not dialog.active:
            return
        self.answer()
        dialog.child.answer()
        self._emit(live_call_event(self.ident, "CALL_ESTABLISHED", dialog.child,
                                   self.api_base_url))
        dialog.state = "ESTABLISHED"
        dialog.establish_time = dialog.child.answer_time
        self._emit(dialog_event(self.ident, "DIALOG_ESTABLISHED", dialog))

    # --- endings -------------------------------------------------------------------------

    def _end_parent(self, source: str) -> None:
        if self.parent.ended:
            return
        if self.parent.answer_time is None:
            self.parent.end("CANCELLED", CANCELLED, source)
            self._emit(call_end_event(self.ident, "CALL_FAILED", self.parent))
        else:
            self.parent.end("FINISHED", NORMAL_HANGUP, source)
            self._emit(call_end_event(self.ident, "CALL_FINISHED", self.parent))
        self.timeline.setdefault("hangup", time.time())
        self._parent_ended.set()

    def _end_dialog(self, dialog: DialogState, source: str) -> None:
        if not dialog.active:
            return
        if dialog.state == "CREATED":
            dialog.end("FAILED", CANCELLED, source)
            self._emit(dialog_event(self.ident, "DIALOG_FAILED", dialog))
        else:
            dialog.end("FINISHED", NORMAL_HANGUP, source)
            self._emit(dialog_event(self.ident, "DIALOG_FINISHED", dialog))

    def _end_child_call(self, dialog: DialogState, source: str) -> None:
        child = dialog.child
        if child.ended:
            return
        if child.answer_time is None:
            child.end("CANCELLED", CANCELLED, source)
            self._emit(call_end_event(self.ident, "CALL_FAILED", child))
        else:
            child.end("FINISHED", NORMAL_HANGUP, source)
            self._emit(call_end_event(self.ident, "CALL_FINISHED", child))

    def _end_child(self, dialog: DialogState, child_source: str, dialog_source: str,
                   propagate: bool) -> None:
        """Child ends; with propagation the caller follows (hangupSource PLATFORM)."""
        self._end_child_call(dialog, child_source)
        if propagate:
            self._end_parent("PLATFORM")
        self._end_dialog(dialog, dialog_source)

    def _end_all(self, parent_source: str, dialog_source: str, child_source: str) -> None:
        """Caller or API hang-up: parent CALL_FINISHED, child CALL_FINISHED, DIALOG_FINISHED."""
        self._end_parent(parent_source)
        dialog = self.dialog
        if dialog is not None and dialog.active:
            self._end_child_call(dialog, child_source)
            self._end_dialog(dialog, dialog_source)

    def _close_leg_soon(self, by: str) -> None:
        leg = self.leg
        if leg is not None and not leg.closed:
            self._tasks[f"close-{id(leg)}"] = asyncio.create_task(leg.hangup(by=by))

    # --- the life task -------------------------------------------------------------------

    def _later(self, delay: float, kind: str, arg: str) -> None:
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(max(0.0, delay), self._commands.put_nowait,
                                            (kind, arg, None)))

    async def _life(self) -> None:
        call_id_var.set(self.call_id)
        self._later(self.script.max_duration_s, "caller", "max_duration")
        if self.script.hangup_after_s is not None:
            self._later(self.script.hangup_after_s, "caller", "caller_hangup")
        try:
            while self.end_reason is None:
                kind, arg, fut = await self._commands.get()
                try:
                    await self._handle(kind, arg)
                finally:
                    if fut is not None and not fut.done():
                        fut.set_result(None)
        finally:
            await self._wind_down()

    async def _handle(self, kind: str, arg: str) -> None:
        dialog = self.dialog
        if kind == "caller":
            self._finish_with(arg, "ENDPOINT", "PARENT_ENDPOINT", "PLATFORM", "caller")
        elif kind in ("api_parent", "api_dialog"):
            self._finish_with("api_hangup", "API", "API", "API" if kind == "api_dialog"
                              else "PLATFORM", "platform")
        elif kind == "media_up" and dialog is not None and dialog.id == arg and dialog.active:
            self._tasks["script"] = asyncio.create_task(self._converse())
        elif kind == "transferred":
            self._later(self.script.transfer_talk_s, "caller", "caller_hangup")
        elif kind in ("media_gone", "api_child") and dialog is not None and dialog.active \
                and ((kind == "media_gone" and dialog.id == arg) or kind == "api_child"):
            script = self._tasks.pop("script", None)
            if script is not None:
                script.cancel()
            source = "ENDPOINT" if kind == "media_gone" else "API"
            dialog_source = "CHILD_ENDPOINT" if kind == "media_gone" else "API"
            self._end_child(dialog, source, dialog_source, propagate=dialog.child_call_hangup)
            if kind == "api_child":
                self._close_leg_soon("platform")
            if dialog.child_call_hangup:
                self.end_reason = "media_closed" if kind == "media_gone" else "api_hangup"

    def _finish_with(self, reason: str, parent_source: str, dialog_source: str,
                     child_source: str, closed_by: str) -> None:
        if self.dialog_failures and "media_connected" not in self.timeline \
                and reason != "caller_hangup":
            reason = "dialog_failed"  # the media never came up, then the call was ended
        self._end_all(parent_source, dialog_source, child_source)
        self._close_leg_soon(closed_by)
        self.end_reason = reason

    async def _converse(self) -> None:
        leg = self.leg
        assert leg is not None
        await converse(leg, self.script)
        # A caller hangs up once the conversation is over, not because the platform's media
        # leg behind the call dropped (they hear silence, then whatever comes next).
        if self.script.policy == "after_agent_reply" and not (leg.closed
                                                              and leg.closed_by == "lost"):
            self._commands.put_nowait(("caller", "caller_hangup", None))

    async def _wind_down(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for name, task in list(self._tasks.items()):
            if name != "life" and not name.startswith("close-"):
                task.cancel()
        if self.leg is not None and not self.leg.closed:
            await self.leg.hangup(by="caller" if self.end_reason in (
                "caller_hangup", "max_duration") else "platform")
        pending = [t for n, t in self._tasks.items() if n != "life"]
        await asyncio.gather(*pending, return_exceptions=True)
        await self._sender.flush(FLUSH_TIMEOUT_S)
        await self._sender.close()
        self._finished.set()
        log.info("call %s finished: %s", self.call_id, self.end_reason)

    async def abort(self) -> None:
        """Simulator shutdown: end the call as the caller would and wait briefly."""
        if not self.finished:
            self._commands.put_nowait(("caller", "sim_stopped", None))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), 5.0)
        life = self._tasks.get("life")
        if life is not None and not life.done():
            life.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await life
