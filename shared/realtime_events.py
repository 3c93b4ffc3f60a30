"""OpenAI Realtime GA events (pure: build client events, classify and parse server events).

Source: the Realtime API reference, https://platform.openai.com/docs/api-reference/realtime
(client events: https://platform.openai.com/docs/api-reference/realtime-client-events,
server events: https://platform.openai.com/docs/api-reference/realtime-server-events). GA
only: no `OpenAI-Beta` header, no `modalities`/camelCase keys, `response.output_audio.delta`
(not `response.audio.delta`). Audio deltas are the hot path: `peek_type` finds the `type`
without parsing the event, and pydantic models are built for control events only.

The wire facts of this socket live here and nowhere else: the audio format (24 kHz 16-bit
mono `audio/pcm`) and what follows from it in bytes, the event types the gateway routes on,
and the error codes a bridge expects in normal operation.
"""

from __future__ import annotations

import base64
import itertools
import re
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from callbridge.shared.profiles import AgentProfile

MODEL_RATE = 24000  # GA `audio/pcm` is 24 kHz only
#: `audio/pcm` is 16-bit little-endian mono.
MODEL_SAMPLE_WIDTH = 2
#: Bytes of model audio per second and per millisecond (48 000 and 48).
MODEL_BYTES_PER_S = MODEL_RATE * MODEL_SAMPLE_WIDTH
MODEL_BYTES_PER_MS = MODEL_BYTES_PER_S // 1000
AUDIO_FORMAT = {"type": "audio/pcm", "rate": MODEL_RATE}

# Client event types.
SESSION_UPDATE = "session.update"
INPUT_AUDIO_APPEND = "input_audio_buffer.append"
RESPONSE_CREATE = "response.create"

# Server event types the gateway routes on.
SESSION_UPDATED = "session.updated"
AUDIO_DELTA = "response.output_audio.delta"
AUDIO_DONE = "response.output_audio.done"  # the end of one item's audio
SPEECH_STARTED = "input_audio_buffer.speech_started"
SPEECH_STOPPED = "input_audio_buffer.speech_stopped"
RESPONSE_CREATED = "response.created"
RESPONSE_DONE = "response.done"
TRANSCRIPT_DONE = "response.output_audio_transcript.done"
INPUT_TRANSCRIPT_DONE = "conversation.item.input_audio_transcription.completed"
FUNCTION_CALL_DONE = "response.function_call_arguments.done"
ERROR = "error"

#: `error` codes a bridge meets in normal operation (server events reference, "error":
#: https://platform.openai.com/docs/api-reference/realtime-server-events/error): a cancel or
#: a commit that raced the server's own turn handling. Logged at debug level only.
RESPONSE_CANCEL_NOT_ACTIVE = "response_cancel_not_active"
ACTIVE_RESPONSE_ERROR = "conversation_already_has_active_response"
COMMIT_EMPTY = "input_audio_buffer_commit_empty"
BENIGN_ERRORS = frozenset({RESPONSE_CANCEL_NOT_ACTIVE, ACTIVE_RESPONSE_ERROR, COMMIT_EMPTY})
#: The code of the error that ends a session at its 60-minute limit (then close 1001).
SESSION_EXPIRED = "session_expired"

_counter = itertools.count(1)
# Fast path: `{"type":"<value>"` at the very start, as orjson and the live server write it
# (optional whitespace for other encoders). Anchored, so only the top-level key can match.
_LEADING_TYPE_RE = re.compile(rb'\s*\{\s*"type"\s*:\s*"([^"\\]+)"')


def next_event_id(prefix: str = "cb") -> str:
    return f"{prefix}_{next(_counter)}"


def peek_type(raw: str | bytes) -> str | None:
    """The event's top-level `type`, cheaply when it is the first key.

    JSON objects are unordered (RFC 8259 section 4): nothing obliges a server to put `type`
    first, and a nested `type` (`error.type`, `item.type`, `part.type`) may come before the
    event's own. So the fast path only accepts `type` as the *first* key of the top-level
    object; any other layout is parsed in full. None when there is no string `type`."""
    data = raw.encode() if isinstance(raw, str) else raw
    match = _LEADING_TYPE_RE.match(data)
    if match:
        return match.group(1).decode()
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    kind = event.get("type") if isinstance(event, dict) else None
    return kind if isinstance(kind, str) else None


def dumps(event: dict[str, Any]) -> str:
    return orjson.dumps(event).decode()


# Client events --------------------------------------------------------------------------

def session_config(profile: AgentProfile, model: str,
                   tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The GA `session` object for `session.update`, from an agent profile."""
    td = profile.turn_detection
    turn_detection: dict[str, Any]
    if td.type == "semantic_vad":
        turn_detection = {"type": "semantic_vad", "eagerness": td.eagerness,
                          "create_response": td.create_response,
                          "interrupt_response": td.interrupt_response}
    else:
        turn_detection = {"type": "server_vad", "threshold": td.threshold,
                          "prefix_padding_ms": td.prefix_padding_ms,
                          "silence_duration_ms": td.silence_duration_ms,
                          "create_response": td.create_response,
                          "interrupt_response": td.interrupt_response}
    audio_input: dict[str, Any] = {"format": AUDIO_FORMAT, "turn_detection": turn_detection,
                                   "noise_reduction": {"type": "near_field"}}
    if profile.transcription_model:
        audio_input["transcription"] = {"model": profile.transcription_model}
    session: dict[str, Any] = {
        "type": "realtime",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": profile.instructions,
        "audio": {"input": audio_input,
                  "output": {"format": AUDIO_FORMAT, "voice": profile.voice}},
    }
    if tools:
        session["tools"] = tools
        session["tool_choice"] = "auto"
    return session


def session_update(session: dict[str, Any]) -> dict[str, Any]:
    return {"type": SESSION_UPDATE, "event_id": next_event_id("cfg"), "session": session}


def input_audio_append(pcm: bytes) -> dict[str, Any]:
    # No event_id: thousands per call, and errors on append are not actionable per frame.
    return {"type": INPUT_AUDIO_APPEND, "audio": base64.b64encode(pcm).decode()}


def response_create(instructions: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": RESPONSE_CREATE, "event_id": next_event_id("resp")}
    if instructions:
        event["response"] = {"instructions": instructions}
    return event


def response_cancel() -> dict[str, Any]:
    return {"type": "response.cancel", "event_id": next_event_id("cancel")}


def item_truncate(item_id: str, audio_end_ms: int) -> dict[str, Any]:
    return {"type": "conversation.item.truncate", "event_id": next_event_id("trunc"),
            "item_id": item_id, "content_index": 0, "audio_end_ms": audio_end_ms}


def text_item(role: Literal["user", "assistant", "system"], text: str) -> dict[str, Any]:
    """A conversation item carrying text: DTMF notices and re-seeded history."""
    content_type = "output_text" if role == "assistant" else "input_text"
    return {"type": "conversation.item.create", "event_id": next_event_id("item"),
            "item": {"type": "message", "role": role,
                     "content": [{"type": content_type, "text": text}]}}


def function_call_output(call_id: str, output: str) -> dict[str, Any]:
    return {"type": "conversation.item.create", "event_id": next_event_id("tool"),
            "item": {"type": "function_call_output", "call_id": call_id, "output": output}}


# Server events (control only) ------------------------------------------------------------

class _Server(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorDetail(_Server):
    type: str | None = None
    code: str | None = None
    message: str = ""
    param: str | None = None
    event_id: str | None = None


class ErrorEvent(_Server):
    type: Literal["error"]
    error: ErrorDetail


class SpeechStarted(_Server):
    type: Literal["input_audio_buffer.speech_started"]
    audio_start_ms: int = 0
    item_id: str | None = None


class ResponseInfo(_Server):
    id: str | None = None
    status: str | None = None
    status_details: dict[str, Any] | None = None


class ResponseCreated(_Server):
    type: Literal["response.created"]
    response: ResponseInfo


class ResponseDone(_Server):
    type: Literal["response.done"]
    response: ResponseInfo


class FunctionCallDone(_Server):
    type: Literal["response.function_call_arguments.done"]
    call_id: str
    name: str
    arguments: str = "{}"
    item_id: str | None = None
    response_id: str | None = None


class TranscriptDone(_Server):
    type: str
    transcript: str = ""
    item_id: str | None = None
    response_id: str | None = None


class AudioDelta(BaseModel):
    """Parsed only where needed; the relay reads these fields from a dict for speed."""

    response_id: str
    item_id: str
    delta: str = Field(..., description="base64 PCM16 24 kHz")
