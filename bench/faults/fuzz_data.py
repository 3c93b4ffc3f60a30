"""Hypothesis strategies for the fuzz scenario: webhook bodies, Infobip-side WebSocket
messages, and model-side (Realtime server) events.

Generation runs hypothesis' own engine (`@given` with only the generate phase) into a list,
so the suite sends what hypothesis produced — diverse and biased toward edge cases (empty,
huge, unicode, wrong types) — without running hypothesis inside the event loop.
"""

from __future__ import annotations

import json
from typing import TypeVar

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

T = TypeVar("T")

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                | st.text(max_size=40))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=5),
    max_leaves=25)

EVENT_TYPES = ["CALL_RECEIVED", "CALL_ESTABLISHED", "CALL_FINISHED", "CALL_FAILED",
               "DIALOG_CREATED", "DIALOG_ESTABLISHED", "DIALOG_FINISHED", "DIALOG_FAILED",
               "", "NEW_TYPE"]


def _dumps(value: object) -> bytes:
    return json.dumps(value).encode()  # stdlib: big integers included


# Webhook bodies: envelope-shaped objects with hostile values, plus raw garbage.
envelopes = st.fixed_dictionaries(
    {"type": st.sampled_from(EVENT_TYPES) | json_values},
    optional={"callId": st.text(max_size=40) | json_values,
              "dialogId": json_values,
              "timestamp": st.sampled_from(["2026-01-15T12:00:00.000+0000", "x", ""])
              | json_values,
              "properties": json_values | st.fixed_dictionaries(
                  {}, optional={"call": json_values | st.fixed_dictionaries(
                      {"id": st.text(max_size=40)}, optional={"endpoint": json_values,
                                                             "state": json_values}),
                      "callLog": json_values, "dialog": json_values,
                      "apiBaseUrl": st.sampled_from(["http://127.0.0.1:1", "ftp://x", ""])
                      | json_values})})
webhook_bodies = st.one_of(envelopes.map(_dumps), envelopes.map(_dumps),
                           json_values.map(_dumps), st.binary(max_size=400),
                           st.text(max_size=200).map(str.encode),
                           st.integers(0, 3000).map(lambda n: b"[" * n))

# Infobip side: audio frames of any length, control text of any shape.
controls = st.fixed_dictionaries(
    {"event": st.sampled_from(["websocket:connected", "websocket:dtmf", "websocket:other",
                               ""]) | json_values},
    optional={"digit": json_values, "content-type": st.sampled_from(
        ["audio/l16;rate=16000", "audio/l16;rate=7", "audio/opus", ""]) | json_values,
        "action": st.sampled_from(["clear", "stop"]) | json_values, "extra": json_values})
caller_messages: st.SearchStrategy[bytes | str] = st.one_of(
    st.binary(max_size=2000), st.binary(min_size=640, max_size=640),
    controls.map(lambda d: json.dumps(d)), st.text(max_size=300))

# Model side: Realtime server events with the right types and wrong contents.
SERVER_TYPES = ["response.output_audio.delta", "response.output_audio.done",
                "response.created", "response.done", "input_audio_buffer.speech_started",
                "response.function_call_arguments.done", "response.output_audio_transcript.done",
                "conversation.item.input_audio_transcription.completed", "error",
                "session.updated", "session.created", "rate_limits.updated", "unknown.type"]
server_events = st.fixed_dictionaries(
    {"type": st.sampled_from(SERVER_TYPES)},
    optional={"delta": st.text(max_size=200) | json_values,
              "response_id": json_values, "item_id": json_values,
              "response": json_values | st.fixed_dictionaries(
                  {}, optional={"id": json_values, "status": json_values,
                                "output": json_values}),
              "error": json_values | st.fixed_dictionaries(
                  {}, optional={"code": json_values, "type": json_values,
                                "message": json_values, "event_id": json_values}),
              "name": st.sampled_from(["hang_up", "transfer_to_human", "x"]) | json_values,
              "call_id": json_values, "arguments": st.text(max_size=80) | json_values,
              "transcript": json_values, "session": json_values})
model_messages: st.SearchStrategy[bytes | str] = st.one_of(
    server_events.map(lambda d: json.dumps(d)), server_events.map(lambda d: json.dumps(d)),
    json_values.map(lambda v: json.dumps(v)), st.text(max_size=200),
    st.binary(max_size=200))


def generate(strategy: st.SearchStrategy[T], n: int, salt: int = 0) -> list[T]:
    """Up to `n` values from `strategy` (deterministic for a given salt)."""
    out: list[T] = []

    @seed(20260115 + salt)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(value: T) -> None:
        out.append(value)

    collect()
    return out


