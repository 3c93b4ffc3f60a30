"""One Realtime GA session: client events in, server events out (no socket code here).

The server hands each text frame to `RealtimeSession.handle` and gives it a `send` coroutine;
everything the session emits is recorded in its `SimSession`. Protocol facts are from
the Realtime API reference (https://platform.openai.com/docs/api-reference/realtime) unless a
comment says otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from callbridge.simulators.openai_realtime.audio import (
    DEFAULT_SCRIPT,
    Reply,
    decode_g711,
    reply_for,
)
from callbridge.simulators.openai_realtime.records import ResponseRecord, SimSession
from callbridge.simulators.openai_realtime.responses import ActiveResponse, ConvItem, ResponseHost
from callbridge.simulators.openai_realtime.sdk_validation import (
    check_server_event,
    validate_client_event,
)
from callbridge.simulators.openai_realtime.vad import EnergyVad, SpeechStarted, VadConfig, VadEvent
from callbridge.simulators.openai_realtime.validation import default_session, validate_update
from callbridge.simulators.openai_realtime.wire import (
    ClientError,
    dumps,
    error_event,
    event,
    invalid_type,
    invalid_value,
    missing,
    new_id,
)

log = logging.getLogger(__name__)

Send = Callable[[str], Awaitable[None]]
MIN_COMMIT_MS = 100  # a manual commit needs >= 100 ms of audio since the last one (ref)


class RealtimeSession(ResponseHost):
    def __init__(self, record: SimSession, send: Send, *, model: str, speed: float,
                 chunk_ms: int, max_session_s: float, transcription_delay_s: float,
                 script: tuple[Reply, ...] | list[Reply] | None = None,
                 validate_server_events: bool = True,
                 update_rejections: deque[ClientError] | None = None) -> None:
        self.record = record
        #: every emitted event is checked against the SDK's server-event types (a failure is
        #: a simulator bug and raises); benchmarks may switch it off for CPU
        self.validate_server_events = validate_server_events
        self._update_rejections = update_rejections if update_rejections is not None else deque()
        self._send = send
        self.speed = speed
        self.chunk_ms = chunk_ms
        self.transcription_delay_s = transcription_delay_s
        self.script = tuple(script) if script else DEFAULT_SCRIPT
        self.session_id = new_id("sess")
        self.conversation_id = new_id("conv")
        self.config = default_session(model, self.session_id, max_session_s)
        record.session_id = self.session_id
        record.config = self.config
        self.items: dict[str, ConvItem] = {}
        self.order: list[str] = []
        self.active: ActiveResponse | None = None
        self.audio_output_started = False  # voice is locked from here on (ref)
        self._tasks: set[asyncio.Task[None]] = set()
        self._buffer_bytes = 0  # input audio since the last commit/clear, wire bytes
        self._pending_item: str | None = None  # item id announced by speech_started
        self._vad: EnergyVad | None = None
        self._configure_input()
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
            "conversation.item.create": self._item_create,
            "conversation.item.truncate": self._truncate,
            "conversation.item.delete": self._item_delete,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
        }

    # output ------------------------------------------------------------------------------

    async def emit(self, evt: dict[str, Any], nbytes: int | None = None) -> None:
        """Check against the SDK, record (audio deltas without payload) and send one server
        event. A server event the SDK rejects raises `SimulatorBug`: the simulator is wrong."""
        if self.validate_server_events:
            check_server_event(evt)
        if nbytes is None:
            self.record.record_sent(evt)
        else:
            self.record.record_sent({k: v for k, v in evt.items() if k != "delta"}
                                    | {"bytes": nbytes})
        await self._send(dumps(evt))

    async def error(self, exc: ClientError, client_event_id: str | None = None) -> None:
        await self.emit(error_event(exc.code, exc.message, exc.param, client_event_id,
                                    exc.err_type))

    async def start(self) -> None:
        await self.emit(event("session.created", session=self.config))

    def close(self) -> None:
        """Connection gone: stop responses and pending transcriptions."""
        if self.active is not None:
            self.active.cancel("client_cancelled")
        for task in list(self._tasks):
            task.cancel()

    # ResponseHost ----------------------------------------------------------------------------

    def add_item(self, item: ConvItem) -> str | None:
        previous = self.order[-1] if self.order else None
        self.items[item.id] = item
        self.order.append(item.id)
        return previous

    def audio_started(self) -> None:
        self.audio_output_started = True

    def response_finished(self, response: ActiveResponse) -> None:
        if self.active is response:
            self.active = None

    # input -------------------------------------------------------------------------------

    async def handle(self, message: str | bytes) -> None:
        if isinstance(message, bytes):  # the model socket takes text frames only (ref)
            await self.error(ClientError("invalid_event", "Binary frames are not supported; "
                                         "send client events as JSON text frames."))
            return
        try:
            evt = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            await self.error(ClientError("invalid_event",
                                         f"The event is not valid JSON: {exc.msg}."))
            return
        if not isinstance(evt, dict):
            await self.error(ClientError("invalid_event", "Expected a JSON object as event."))
            return
        type_ = evt.get("type")
        client_id = evt.get("event_id") if isinstance(evt.get("event_id"), str) else None
        if type_ != "input_audio_buffer.append":
            self.record.record_received(evt)
        handler = self._handlers.get(type_) if isinstance(type_, str) else None
        try:
            # The SDK's client-event types decide what is valid (unknown keys included);
            # the handlers below only model what the live service does with it.
            validate_client_event(evt)
            if handler is None:
                # Valid for the SDK but not simulated (conversation.item.retrieve, and
                # output_audio_buffer.clear, which exists for WebRTC/SIP sessions only).
                raise invalid_value("type", type_, list(self._handlers))
            await handler(evt)
        except ClientError as exc:
            await self.error(exc, client_id)

    def _configure_input(self) -> None:
        td = self.config["audio"]["input"]["turn_detection"]
        if td is None:
            self._vad = None
            return
        cfg = VadConfig.from_turn_detection(td)
        rate = 24000 if self._input_format() == "audio/pcm" else 8000
        if self._vad is None or self._vad.rate != rate:
            self._vad = EnergyVad(cfg, rate)
        else:
            self._vad.configure(cfg)

    def _input_format(self) -> str:
        return str(self.config["audio"]["input"]["format"]["type"])

    async def _session_update(self, evt: dict[str, Any]) -> None:
        if "session" not in evt:
            raise missing("session")
        if self._update_rejections:  # fault hook: RealtimeSimulator.reject_session_updates
            raise self._update_rejections.popleft()
        new = validate_update(self.config, evt["session"],
                              voice_locked=self.audio_output_started)
        self.config = new  # nothing above mutated the old config: all or nothing (ref)
        self.record.config = new
        self.record.session_updates.append(evt["session"])
        self._configure_input()
        await self.emit(event("session.updated", session=new))

    async def _append(self, evt: dict[str, Any]) -> None:
        audio = evt.get("audio")
        client_id = evt.get("event_id") if isinstance(evt.get("event_id"), str) else None
        if audio is None:
            self.record.record_append(client_id, 0, 0.0)
            raise missing("audio")
        if not isinstance(audio, str):
            self.record.record_append(client_id, 0, 0.0)
            raise invalid_type("audio", "a string", audio)
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as exc:
            self.record.record_append(client_id, 0, 0.0)
            raise ClientError("invalid_value", "Invalid 'audio'. Expected base64-encoded "
                              "audio bytes.", "audio") from exc
        fmt = self._input_format()
        per_ms = 48 if fmt == "audio/pcm" else 8
        self.record.record_append(client_id, len(data), len(data) / per_ms)
        self._buffer_bytes += len(data)
        if self._vad is None or not data:
            return
        pcm = data if fmt == "audio/pcm" else decode_g711(data, fmt)
        for vad_event in self._vad.feed(pcm):
            await self._on_vad(vad_event)

    async def _on_vad(self, vad_event: VadEvent) -> None:
        td = self.config["audio"]["input"]["turn_detection"] or {}
        if isinstance(vad_event, SpeechStarted):
            self._pending_item = new_id("item")
            await self.emit(event("input_audio_buffer.speech_started",
                                  audio_start_ms=vad_event.audio_start_ms,
                                  item_id=self._pending_item))
            if self.active is not None and td.get("interrupt_response", True):
                # The server cancels the response itself but never truncates (ref).
                self._cancel(self.active, "turn_detected")
            return
        item_id = self._pending_item or new_id("item")
        self._pending_item = None
        await self.emit(event("input_audio_buffer.speech_stopped",
                              audio_end_ms=vad_event.audio_end_ms, item_id=item_id))
        await self._commit_item(item_id, vad_event.audio_end_ms - vad_event.audio_start_ms)
        if td.get("create_response", True):
            if self.active is None:
                self._start_response({})
            else:
                log.debug("turn ended during an active response; no new response")

    async def _commit(self, evt: dict[str, Any]) -> None:
        per_ms = 48 if self._input_format() == "audio/pcm" else 8
        ms = self._buffer_bytes / per_ms
        if ms < MIN_COMMIT_MS:
            raise ClientError("input_audio_buffer_commit_empty",
                              "Error committing input audio buffer: buffer too small. Expected "
                              f"at least {MIN_COMMIT_MS}ms of audio, but buffer only has "
                              f"{ms:.2f}ms of audio.")
        if self._vad is not None:
            self._vad.reset()
        await self._commit_item(self._pending_item or new_id("item"), int(ms))
        self._pending_item = None

    async def _commit_item(self, item_id: str, audio_ms: int) -> None:
        """committed -> conversation.item.added/.done for the caller's turn."""
        self._buffer_bytes = 0
        body = {"id": item_id, "object": "realtime.item", "type": "message",
                "status": "completed", "role": "user",
                "content": [{"type": "input_audio", "transcript": None}]}
        previous = self.add_item(ConvItem(item_id, "message", "user", body=body))
        await self.emit(event("input_audio_buffer.committed", previous_item_id=previous,
                              item_id=item_id))
        await self.emit(event("conversation.item.added", previous_item_id=previous, item=body))
        await self.emit(event("conversation.item.done", previous_item_id=previous, item=body))
        if self.config["audio"]["input"]["transcription"] is not None:
            # Input transcription is asynchronous and often lands after the response
            # started (ref); the live server only sends it when transcription is configured.
            self._spawn(self._transcribe(item_id, audio_ms))

    async def _transcribe(self, item_id: str, audio_ms: int) -> None:
        delay = self.transcription_delay_s / self.speed if self.speed > 0 else 0.0
        await asyncio.sleep(delay)
        # The simulator does no speech recognition: the transcript is an honest placeholder.
        await self.emit(event("conversation.item.input_audio_transcription.completed",
                              item_id=item_id, content_index=0,
                              transcript=f"[caller audio {audio_ms / 1000:.1f} s]",
                              usage={"type": "duration", "seconds": round(audio_ms / 1000, 1)}))

    async def _clear(self, evt: dict[str, Any]) -> None:
        self._buffer_bytes = 0
        self._pending_item = None
        if self._vad is not None:
            self._vad.reset()
        await self.emit(event("input_audio_buffer.cleared"))

    # conversation ------------------------------------------------------------------------

    async def _item_create(self, evt: dict[str, Any]) -> None:
        item: dict[str, Any] = evt["item"]  # shape checked by the SDK's types in handle()
        kind = item["type"]
        previous_req = evt.get("previous_item_id")
        if previous_req not in (None, "root") and previous_req not in self.items:
            raise ClientError("invalid_value", f"Previous item with id '{previous_req}' does "
                              "not exist.", "previous_item_id")
        given = item.get("id")
        item_id: str = given if isinstance(given, str) else new_id("item")
        body = {"id": item_id, "object": "realtime.item", **item, "status": "completed"}
        body["id"] = item_id
        conv = ConvItem(item_id, str(kind), item.get("role"), body=body)
        if previous_req is None:
            previous = self.add_item(conv)
        else:
            pos = 0 if previous_req == "root" else self.order.index(previous_req) + 1
            self.items[item_id] = conv
            self.order.insert(pos, item_id)
            previous = None if previous_req == "root" else previous_req
        await self.emit(event("conversation.item.added", previous_item_id=previous, item=body))
        await self.emit(event("conversation.item.done", previous_item_id=previous, item=body))

    async def _item_delete(self, evt: dict[str, Any]) -> None:
        item_id = evt.get("item_id")
        if not isinstance(item_id, str) or item_id not in self.items:
            raise ClientError("invalid_value", f"Item with item_id not found: {item_id}",
                              "item_id")
        del self.items[item_id]
        self.order.remove(item_id)
        await self.emit(event("conversation.item.deleted", item_id=item_id))

    async def _truncate(self, evt: dict[str, Any]) -> None:
        item_id = evt.get("item_id")
        content_index = evt.get("content_index", 0)
        audio_end_ms = evt.get("audio_end_ms")
        item = self.items.get(item_id) if isinstance(item_id, str) else None
        attempt = {"item_id": item_id, "content_index": content_index,
                   "audio_end_ms": audio_end_ms,
                   "generated_ms": item.generated_ms if item is not None else None,
                   "event_id": evt.get("event_id"), "ok": False}
        self.record.truncates.append(attempt)
        try:
            if item_id is None:
                raise missing("item_id")
            if audio_end_ms is None:
                raise missing("audio_end_ms")
            if not isinstance(audio_end_ms, int) or isinstance(audio_end_ms, bool):
                raise invalid_type("audio_end_ms", "an integer", audio_end_ms)
            if audio_end_ms < 0:
                raise invalid_value("audio_end_ms", audio_end_ms)
            if item is None:
                # Text is the simulator's wording; the live message was not in our sources.
                raise ClientError("invalid_value", f"Item with item_id not found: {item_id}",
                                  "item_id")
            if item.role != "assistant" or item.type != "message":
                raise ClientError("invalid_value", "Only assistant messages with audio can be "
                                  "truncated.", "item_id")
            if content_index != 0:
                raise invalid_value("content_index", content_index, [0])
            if audio_end_ms > item.generated_ms:
                # The real text, e.g. "Audio content of 6350ms is already shorter than
                # 8160ms" (ref, "Barge-in done right").
                raise ClientError("invalid_value", f"Audio content of {item.generated_ms}ms "
                                  f"is already shorter than {audio_end_ms}ms", "audio_end_ms")
        except ClientError as exc:
            attempt["error"] = exc.code
            self.record.truncate_errors.append({**attempt, "code": exc.code,
                                                "message": exc.message, "param": exc.param})
            raise
        attempt["ok"] = True
        item.truncated_ms = audio_end_ms
        await self.emit(event("conversation.item.truncated", item_id=item_id,
                              content_index=content_index, audio_end_ms=audio_end_ms))

    # responses ---------------------------------------------------------------------------

    async def _response_create(self, evt: dict[str, Any]) -> None:
        options = evt.get("response") or {}
        if not isinstance(options, dict):
            raise invalid_type("response", "an object", options)
        if "instructions" in options and not isinstance(options["instructions"], str):
            raise invalid_type("response.instructions", "a string", options["instructions"])
        if self.active is not None:
            raise ClientError("conversation_already_has_active_response",
                              "Conversation already has an active response in progress: "
                              f"{self.active.id}. Wait until the response is finished before "
                              "creating a new one.")
        self._start_response(options)

    async def _response_cancel(self, evt: dict[str, Any]) -> None:
        wanted = evt.get("response_id")
        if self.active is None or (wanted is not None and wanted != self.active.id):
            raise ClientError("response_cancel_not_active",
                              "Cancellation failed: no active response found")
        self._cancel(self.active, "client_cancelled")

    def _cancel(self, response: ActiveResponse, reason: str) -> None:
        if response.cancel_reason is None:
            self.record.cancels.append({"response_id": response.id, "reason": reason,
                                        "audio_ms": response.record.audio_ms})
        response.cancel(reason)

    def _start_response(self, options: dict[str, Any]) -> None:
        # `response.instructions` replace the session's for this response only (SDK docstring
        # of ResponseCreateEvent): record what the response actually ran with.
        own = options.get("instructions")
        record = ResponseRecord(new_id("resp"),
                                instructions=own if own is not None
                                else self.config.get("instructions"),
                                instructions_source="response" if own is not None
                                else "session")
        reply = reply_for(self.script, len(self.record.responses))
        self.record.responses.append(record)
        self.active = ActiveResponse(self, reply, record, options)
        self._spawn(self._run_response(self.active))

    async def _run_response(self, response: ActiveResponse) -> None:
        try:
            await response.run()
        finally:
            if self.active is response:
                self.active = None

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            # A send on a closed socket ends a response quietly; anything else is a bug.
            if type(exc).__name__.startswith("ConnectionClosed"):
                return
            log.error("simulator task failed", exc_info=exc)
