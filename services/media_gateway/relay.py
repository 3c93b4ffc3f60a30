"""The hot path: caller audio -> model, model events -> caller playout.

One task per direction per call (../shared/perf-notes.md, "Relaying audio"): the caller pump
below, and the model reader in `ModelLink.run`, which calls `on_model_event` for each raw
server event. Model events are routed on `shared.realtime_events.peek_type` without a full
parse; audio deltas are read with orjson (three fields) and never validated with pydantic;
control events (errors, speech_started, response lifecycle, tool calls) get pydantic models.
Nothing here awaits except the caller socket's `recv`: caller audio is handled as each frame
is parsed (`ws_fastpath.MediaConnection`) and sends are synchronous frame writes.

Malformed input never ends a session: an odd-length or empty audio frame, non-JSON text, an
unknown control message or a model event missing fields is counted or logged and skipped.
Caller audio is metered before it gets here (`ws_fastpath.MediaConnection` with the call's
`limits.CallerMeter`): what reaches `caller_audio_handler` is at most real time + burst.

DTMF is the one caller input that becomes *text* in the model's conversation, so it is
the prompt-injection door: only a single keypad key (`shared.infobip_media.DTMF_DIGITS`)
ever reaches the model, through a fixed sentence, at most DTMF_MAX_PER_S a second per
call; anything else is dropped and counted (`callbridge_gateway_caller_limited_total`).
"""

from __future__ import annotations

import binascii
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson

from services.media_gateway import metrics
from services.media_gateway.limits import ACCEPT
from services.media_gateway.metrics import Limited
from services.media_gateway.ws_fastpath import MediaConnection
from shared import realtime_events as rt
from shared.infobip_media import (
    Dtmf,
    InvalidDtmf,
    MediaProtocolError,
    UnknownControl,
    parse_control,
)

if TYPE_CHECKING:
    from services.media_gateway.session import MediaSession

log = logging.getLogger(__name__)

#: Reference "Events a bridge needs": the end of one item's audio.
AUDIO_DONE = "response.output_audio.done"
#: Malformed or unknown control messages logged per call; past that they are only counted
#: (a peer must not be able to fill the logs).
CONTROL_LOG_LIMIT = 5
#: Errors a bridge expects in normal operation (reference: "Error event").
BENIGN_ERRORS = frozenset({"response_cancel_not_active",
                           "conversation_already_has_active_response",
                           "input_audio_buffer_commit_empty"})


async def caller_pump(session: MediaSession) -> None:
    """Serve the Infobip socket until it closes (raises ConnectionClosed at the end).

    Audio frames are handled as they are parsed (`MediaConnection`); this loop reads what
    is left: control messages, fragmented frames, and the close."""
    conn = session.conn
    on_audio = caller_audio_handler(session)
    meter = session.meter
    direct = conn if isinstance(conn, MediaConnection) else None
    if direct is not None:
        direct.set_binary_handler(on_audio, meter)
    try:
        while True:  # ends with ConnectionClosed when Infobip (or we) close the socket
            msg = await conn.recv()
            if isinstance(msg, bytes):  # a fragmented message (or not our connection class)
                if meter is None or meter.charge_audio(len(msg), session.loop.time()) \
                        == ACCEPT:
                    on_audio(msg)
            else:
                on_caller_control(session, msg)
    finally:
        if direct is not None:
            direct.clear_binary_handler()  # the handler refers to the session: no cycle left


def caller_audio_handler(session: MediaSession) -> Callable[[bytes], None]:
    """The per-frame work for caller audio: resample, forward to the model, sample the
    added latency. Never raises on bad input (counted as malformed)."""
    link = session.link
    resample = session.resample_in.process
    loop_time = session.loop.time
    observe = metrics.RELAY_LATENCY.labels("to_model").observe
    every = session.settings.latency_sample_every
    n = 0

    def on_audio(msg: bytes) -> None:
        nonlocal n
        t0 = loop_time()
        session.frames_in += 1
        session.last_audio_in = t0
        if len(msg) < 2:
            session.malformed_frames += 1
            return
        if len(msg) & 1:
            session.malformed_frames += 1
        pcm24 = resample(msg)
        if pcm24 and link.send_audio(pcm24):
            n += 1
            if n % every == 0:
                observe(loop_time() - t0)

    return on_audio


def on_caller_control(session: MediaSession, text: str) -> None:
    """One text message inside a call. Nothing here ends the call: the media protocol has
    no control message that does (README "Protocol decisions")."""
    try:
        control = parse_control(text)
    except InvalidDtmf as exc:
        metrics.limited(Limited.DTMF_INVALID)
        _note(session, "dropped a dtmf that is not a keypad key: %s", exc)
        return
    except MediaProtocolError as exc:
        session.malformed_frames += 1
        _note(session, "ignored a bad control message: %s", exc)
        return
    if isinstance(control, Dtmf):
        bucket = session.dtmf_bucket
        if bucket is not None and not bucket.take(1.0, session.loop.time()):
            metrics.limited(Limited.DTMF_RATE)
            return
        # Reference (Infobip "Media stream WebSocket"): {"event":"websocket:dtmf","digit":"3"}.
        # `digit` is one of DTMF_DIGITS here (parse_control refused anything else).
        session.record_line("caller", f"[keypad {control.digit}]")
        session.link.send(rt.text_item(
            "user", f"The caller pressed {control.digit} on the phone keypad."))
        session.request_response()
    elif isinstance(control, UnknownControl):
        _note(session, "ignored control message %r", control.event)
    else:
        _note(session, "ignored a repeated websocket:connected", None)


def _note(session: MediaSession, fmt: str, arg: object) -> None:
    """Log a skipped control message, the first CONTROL_LOG_LIMIT of a call only."""
    session.control_notes += 1
    if session.control_notes <= CONTROL_LOG_LIMIT:
        if arg is None:
            log.info(fmt)
        else:
            log.info(fmt, arg)


def on_model_event(session: MediaSession, raw: bytes, received_at: float) -> None:
    """Route one server event. Never raises: a bad event is logged and skipped."""
    kind = rt.peek_type(raw)
    try:
        if kind == rt.AUDIO_DELTA:
            _on_audio_delta(session, raw, received_at)
        elif kind == rt.SPEECH_STARTED:
            outcome = session.barge.on_speech_started(received_at, session.active_response)
            if outcome.cleared:
                session.record_update(barge_ins=session.barge.barge_ins,
                                      truncates=session.barge.truncates)
        elif kind == AUDIO_DONE:
            ev = orjson.loads(raw)
            _on_audio_done(session, str(ev.get("item_id") or ""), str(ev.get("response_id")))
        elif kind == rt.RESPONSE_CREATED:
            created = rt.ResponseCreated.model_validate_json(raw)
            session.active_response = created.response.id or "?"
        elif kind == rt.RESPONSE_DONE:
            done = rt.ResponseDone.model_validate_json(raw)
            session.on_response_done(done.response.id, done.response.status or "")
        elif kind == rt.FUNCTION_CALL_DONE:
            call = rt.FunctionCallDone.model_validate_json(raw)
            session.on_function_call(call)
        elif kind == rt.TRANSCRIPT_DONE:
            line = rt.TranscriptDone.model_validate_json(raw)
            if line.transcript and not session.barge.is_cancelled(line.response_id):
                session.record_line("agent", line.transcript)
        elif kind == rt.INPUT_TRANSCRIPT_DONE:
            line = rt.TranscriptDone.model_validate_json(raw)
            if line.transcript:
                session.record_line("caller", line.transcript)
        elif kind == rt.ERROR:
            _on_error(session, raw)
    # ValueError covers pydantic's ValidationError, orjson's JSONDecodeError, binascii.Error
    # and a2b_base64's own ValueError on non-ASCII text (found by the fault suite's fuzzing).
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("ignored a malformed %s event: %s", kind, type(exc).__name__)


def _on_audio_delta(session: MediaSession, raw: bytes, received_at: float) -> None:
    ev = orjson.loads(raw)
    response_id = ev["response_id"]
    barge = session.barge
    if barge.is_cancelled(response_id) or session.ending_notice:
        return
    item_id = ev["item_id"]
    pcm24 = binascii.a2b_base64(ev["delta"])
    barge.item(item_id, response_id).generated_ms += len(pcm24) / 48.0  # 24 kHz 16-bit
    pcm = session.resample_out.process(pcm24)
    if pcm and session.playout.push(pcm, item_id):
        session.sender.kick(session.loop.time(), received_at)


def _on_audio_done(session: MediaSession, item_id: str, response_id: str) -> None:
    if session.barge.is_cancelled(response_id) or session.ending_notice:
        return
    entry = session.barge.items.get(item_id)
    if entry is not None:
        entry.audio_done = True
    tail = session.resample_out.flush()
    if tail:
        session.playout.push(tail, item_id)
    if session.playout.pad_item():
        session.sender.kick(session.loop.time(), session.loop.time())


def _on_error(session: MediaSession, raw: bytes) -> None:
    err = rt.ErrorEvent.model_validate_json(raw).error
    code = err.code or err.type or "unknown"
    metrics.model_error(code)
    if code in BENIGN_ERRORS:
        log.debug("model: %s (benign)", code)
        return
    log.warning("model error %s: %s (param=%s, event_id=%s)", code, err.message, err.param,
                err.event_id)
    if err.event_id and err.event_id == session.last_response_request:
        session.active_response = None  # our response.create was refused
