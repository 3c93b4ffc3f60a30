"""The hot path of one call: caller audio -> model, model events -> caller output.

One task per direction per call (README "Architecture", "Audio path"): `Relay.pump`, and
the model reader `ModelLink.run`, which calls `Relay.on_model_event` for each raw event.
Model events are routed on `rt.peek_type` without a full parse; audio deltas are read with
orjson (three fields), only control events get pydantic models. Nothing here awaits but the
caller socket's `recv`: caller audio is handled as each frame is parsed
(`ws_fastpath.MediaConnection`) and sends are synchronous frame writes.

The relay does not know the session. It works on the call's parts (caller output, model
link, barge-in, response turns, record), and what only the session can do (run the tools
of a finished response) is the one-method `RelayHost` protocol, held weakly: the session
owns the relay, and an ended call must be freed by reference counting alone, without a
cycle (tests/gateway/test_gateway_regressions.py).

Malformed input never ends a session: an odd-length or empty audio frame, non-JSON text, an
unknown control message or a model event missing fields is counted or logged and skipped.
Caller audio is metered before it gets here (`ws_fastpath.MediaConnection` with the call's
`limits.CallerMeter`): what reaches the audio handler is at most real time + burst.
Text frames (DTMF above all: the prompt-injection door) are `caller_control.py`'s.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import weakref
from collections.abc import Callable
from typing import Protocol

import orjson

from callbridge.services.media_gateway import metrics
from callbridge.services.media_gateway.bargein import BargeIn
from callbridge.services.media_gateway.caller_control import CallerControl
from callbridge.services.media_gateway.caller_output import CallerOutput
from callbridge.services.media_gateway.config import GatewaySettings
from callbridge.services.media_gateway.limits import ACCEPT, CallerMeter
from callbridge.services.media_gateway.model_link import ModelLink
from callbridge.services.media_gateway.state import CallRecord
from callbridge.services.media_gateway.turns import ResponseTurns
from callbridge.services.media_gateway.wire_watch import WireWatch
from callbridge.services.media_gateway.ws_fastpath import MediaConnection
from callbridge.shared import realtime_events as rt
from callbridge.shared.audio.resampler import StreamResampler

log = logging.getLogger(__name__)


class RelayHost(Protocol):
    """What the relay needs from its call (implemented by `session.MediaSession`)."""

    def on_response_done(self, response_id: str | None, status: str) -> None: ...


class Relay:
    """One call's two directions, and the caller-input state they keep (counters, meter,
    the caller -> model resampler, the text frames' handler)."""

    def __init__(self, host: RelayHost, conn: MediaConnection, link: ModelLink,
                 output: CallerOutput, barge: BargeIn, turns: ResponseTurns,
                 record: CallRecord, wire: WireWatch, settings: GatewaySettings,
                 rate: int) -> None:
        self._host: RelayHost = weakref.proxy(host)
        self.conn = conn
        self.link = link
        self.output = output
        self.barge = barge
        self.turns = turns
        self.record = record
        self.wire = wire
        self.loop = loop = asyncio.get_running_loop()
        now = loop.time()
        s = settings
        self.meter = CallerMeter(rate, s.gateway_caller_audio_burst_ms,
                                 s.gateway_caller_flood_ratio,
                                 s.gateway_caller_flood_window_s, now)
        self.control = CallerControl(link, turns, record, wire, s.gateway_dtmf_max_per_s, now)
        self.resampler = StreamResampler(rate, rt.MODEL_RATE, s.gateway_resample_quality)
        self.sample_every = s.gateway_latency_sample_every
        self.frames_in = 0
        self.malformed_frames = 0  # audio frames of an odd or too small length
        self.last_audio_in = now
        #: False once the gateway's own ending notice owns the caller's output
        self.model_audio = True

    def close(self) -> None:
        """Free the caller -> model resampler's native buffers now (end of call)."""
        self.resampler.close()

    @property
    def frames_dropped(self) -> int:
        """Caller frames dropped above real time + burst (counted by the meter)."""
        return self.meter.dropped

    # Caller -> model -----------------------------------------------------------------------

    async def pump(self) -> None:
        """Serve the Infobip socket until it closes (raises ConnectionClosed at the end).

        Audio frames are handled as they are parsed (`MediaConnection`); this loop reads
        what is left: control messages, fragmented frames, and the close."""
        conn = self.conn
        on_audio = self.audio_handler()
        meter = self.meter
        conn.set_binary_handler(on_audio, meter)
        try:
            while True:  # ends with ConnectionClosed when Infobip (or we) close the socket
                msg = await conn.recv()
                if isinstance(msg, bytes):  # a fragmented message
                    if meter.charge_audio(len(msg), self.loop.time()) == ACCEPT:
                        on_audio(msg)
                else:
                    self.control.on_text(msg, self.loop.time())
        finally:
            conn.clear_binary_handler()  # the handler refers to the relay: no cycle left

    def audio_handler(self) -> Callable[[bytes], None]:
        """The per-frame work for caller audio: resample, forward to the model, sample the
        added latency. Never raises on bad input (counted as malformed)."""
        send_audio = self.link.send_audio
        resample = self.resampler.process
        loop_time = self.loop.time
        observe = metrics.RELAY_LATENCY.labels("to_model").observe
        every = self.sample_every
        on_frame = self.wire.on_frame
        n = 0

        def on_audio(msg: bytes) -> None:
            nonlocal n
            t0 = loop_time()
            self.frames_in += 1
            self.last_audio_in = t0
            on_frame(len(msg), t0)
            if len(msg) < 2:
                self.malformed_frames += 1
                return
            if len(msg) & 1:
                self.malformed_frames += 1
            pcm24 = resample(msg)
            if pcm24 and send_audio(pcm24):
                n += 1
                if n % every == 0:
                    observe(loop_time() - t0)

        return on_audio

    # Model -> caller -----------------------------------------------------------------------

    def on_model_event(self, raw: bytes, received_at: float) -> None:
        """Route one server event. Never raises: a bad event is logged and skipped."""
        kind = rt.peek_type(raw)
        try:
            if kind == rt.AUDIO_DELTA:
                self._on_audio_delta(raw, received_at)
            elif kind == rt.SPEECH_STARTED:
                barge = self.barge
                if barge.on_speech_started(received_at, self.turns.active).cleared:
                    self.record.update(barge_ins=barge.barge_ins, truncates=barge.truncates)
            elif kind == rt.AUDIO_DONE:
                ev = orjson.loads(raw)
                self._on_audio_done(str(ev.get("item_id") or ""), str(ev.get("response_id")))
            elif kind == rt.RESPONSE_CREATED:
                created = rt.ResponseCreated.model_validate_json(raw)
                self.turns.on_created(created.response.id or "?")
            elif kind == rt.RESPONSE_DONE:
                done = rt.ResponseDone.model_validate_json(raw)
                self._host.on_response_done(done.response.id, done.response.status or "")
            elif kind == rt.FUNCTION_CALL_DONE:
                self.turns.on_function_call(rt.FunctionCallDone.model_validate_json(raw))
            elif kind == rt.TRANSCRIPT_DONE:
                line = rt.TranscriptDone.model_validate_json(raw)
                if line.transcript and not self.barge.is_cancelled(line.response_id):
                    self.record.line("agent", line.transcript)
            elif kind == rt.INPUT_TRANSCRIPT_DONE:
                line = rt.TranscriptDone.model_validate_json(raw)
                if line.transcript:
                    self.record.line("caller", line.transcript)
            elif kind == rt.ERROR:
                self._on_error(raw)
        # ValueError covers pydantic's ValidationError, orjson's JSONDecodeError,
        # binascii.Error and a2b_base64's own ValueError on non-ASCII text (found by the
        # fault suite's fuzzing).
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignored a malformed %s event: %s", kind, type(exc).__name__)

    def _on_audio_delta(self, raw: bytes, received_at: float) -> None:
        ev = orjson.loads(raw)
        response_id = ev["response_id"]
        barge = self.barge
        if barge.is_cancelled(response_id) or not self.model_audio:
            return
        item_id = ev["item_id"]
        pcm24 = binascii.a2b_base64(ev["delta"])
        barge.item(item_id, response_id).generated_ms += len(pcm24) / rt.MODEL_BYTES_PER_MS
        self.output.push(pcm24, item_id, received_at)

    def _on_audio_done(self, item_id: str, response_id: str) -> None:
        if self.barge.is_cancelled(response_id) or not self.model_audio:
            return
        entry = self.barge.items.get(item_id)
        if entry is not None:
            entry.audio_done = True
        self.output.flush(item_id)

    def _on_error(self, raw: bytes) -> None:
        err = rt.ErrorEvent.model_validate_json(raw).error
        code = err.code or err.type or "unknown"
        metrics.model_error(code)
        if code in rt.BENIGN_ERRORS:
            log.debug("model: %s (benign)", code)
            return
        log.warning("model error %s: %s (param=%s, event_id=%s)", code, err.message, err.param,
                    err.event_id)
        if err.event_id:
            self.turns.on_refused(err.event_id)
