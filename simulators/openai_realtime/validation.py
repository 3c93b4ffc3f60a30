"""What the live service does with a valid `session.update`, and a fresh session's defaults.

Whether a client event is *valid* is decided before this module runs, by the official SDK's
types (`callbridge.simulators.openai_realtime.sdk_validation`): unknown keys, missing
`session.type`,
wrong JSON types. What is left here is behaviour the SDK's types cannot express, from
the Realtime API reference (https://platform.openai.com/docs/api-reference/realtime) and
docs/protocol-assumptions.md: the voices the
service has, the voice lock after the first audio, `audio/pcm` at 24 kHz only, ranges, and
merging an update into the effective session. A rejected update is discarded WHOLE:
`validate_update` builds the new session on a copy and only returns it when every field
passed, so the caller applies all of it or nothing.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from callbridge.simulators.openai_realtime.wire import (
    ClientError,
    invalid_type,
    invalid_value,
    missing,
    unknown,
)

VOICES = ["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin",
          "cedar"]
MODEL_RATE = 24000  # GA `audio/pcm` is 24 kHz only
FORMAT_TYPES = ["audio/pcm", "audio/pcmu", "audio/pcma"]
EAGERNESS = ["low", "medium", "high", "auto"]

# Live `session.created` reports server_vad silence 200 ms, threshold 0.5, prefix 300 (ref).
DEFAULT_SERVER_VAD: dict[str, Any] = {
    "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
    "silence_duration_ms": 200, "idle_timeout_ms": None, "create_response": True,
    "interrupt_response": True}
DEFAULT_SEMANTIC_VAD: dict[str, Any] = {
    "type": "semantic_vad", "eagerness": "auto", "create_response": True,
    "interrupt_response": True}
#: A session nobody configured speaks with `alloy` (the live service's default voice).
DEFAULT_VOICE = "alloy"
#: A fresh session has a generic, non-empty instruction text, not our persona: a call whose
#: `session.update` was rejected runs on this (the simulator's stand-in for the live text).
DEFAULT_INSTRUCTIONS = (
    "You are a helpful, witty, and friendly AI. Act like a human, but remember that you "
    "aren't a human. Your voice and personality should be warm and engaging. Talk quickly.")


def default_session(model: str, session_id: str, max_session_s: float) -> dict[str, Any]:
    """The effective session a fresh socket starts with (what `session.created` carries)."""
    return {
        "type": "realtime", "object": "realtime.session", "id": session_id, "model": model,
        "output_modalities": ["audio"], "instructions": DEFAULT_INSTRUCTIONS, "tools": [],
        "tool_choice": "auto", "max_output_tokens": "inf", "tracing": None,
        "truncation": "auto", "prompt": None, "include": None,
        "expires_at": int(time.time() + max_session_s),
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": MODEL_RATE},
                      "transcription": None, "noise_reduction": None,
                      "turn_detection": dict(DEFAULT_SERVER_VAD)},
            "output": {"format": {"type": "audio/pcm", "rate": MODEL_RATE},
                       "voice": DEFAULT_VOICE, "speed": 1.0}},
    }


def validate_update(current: dict[str, Any], update: Any, *,
                    voice_locked: bool) -> dict[str, Any]:
    """The new effective session, or ClientError for the first problem found.

    `voice_locked`: assistant audio was already produced, so the voice may not change (ref:
    "The voice cannot change after the first audio output").
    """
    if not isinstance(update, dict):
        raise invalid_type("session", "an object", update)
    if "type" not in update:  # the SDK's types require it too (checked before this runs)
        raise missing("session.type")
    new = copy.deepcopy(current)
    if update["type"] != "realtime":
        # Only realtime sessions are simulated; a socket cannot switch to transcription.
        raise invalid_value("session.type", update["type"], ["realtime"])
    for key, value in update.items():
        path = f"session.{key}"
        if key in ("model", "instructions"):
            new[key] = _string(path, value)
        elif key == "output_modalities":
            if not isinstance(value, list):
                raise invalid_type(path, "an array", value)
            if value not in (["audio"], ["text"]):
                raise invalid_value(path, value, ["audio", "text"])
            new[key] = list(value)
        elif key == "tools":
            new[key] = _tools(path, value)
        elif key == "tool_choice":
            new[key] = _tool_choice(path, value)
        elif key == "max_output_tokens":
            if value != "inf" and not (_is_int(value) and 1 <= value <= 4096):
                raise invalid_value(path, value)
            new[key] = value
        elif key == "audio":
            new[key] = _audio(path, value, new["audio"], voice_locked)
        elif key != "type":  # include, tracing, truncation, prompt: stored as given
            new[key] = value
    return new


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _string(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise invalid_type(path, "a string", value)
    return value


def _object(path: str, value: Any, known: frozenset[str] | set[str]) -> dict[str, Any]:
    """`value` as an object. Unknown keys were refused by the SDK check before this runs;
    `known` is the subset of the SDK's keys this simulator models (others are kept as given
    where the caller stores the object, ignored where it merges field by field)."""
    if not isinstance(value, dict):
        raise invalid_type(path, "an object", value)
    return value


def _tools(path: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise invalid_type(path, "an array", value)
    out = []
    for i, tool in enumerate(value):
        p = f"{path}[{i}]"
        _object(p, tool, {"type", "name", "description", "parameters"})
        if tool.get("type") != "function":
            raise invalid_value(f"{p}.type", tool.get("type"), ["function"])
        if "name" not in tool:
            raise missing(f"{p}.name")
        _string(f"{p}.name", tool["name"])
        if "parameters" in tool and not isinstance(tool["parameters"], dict):
            raise invalid_type(f"{p}.parameters", "an object", tool["parameters"])
        out.append(dict(tool))
    return out


def _tool_choice(path: str, value: Any) -> Any:
    if isinstance(value, str):
        if value not in ("auto", "none", "required"):
            raise invalid_value(path, value, ["auto", "none", "required"])
        return value
    _object(path, value, {"type", "name"})
    if value.get("type") != "function" or not isinstance(value.get("name"), str):
        raise invalid_value(path, value)
    return dict(value)


def _audio(path: str, value: Any, current: dict[str, Any], voice_locked: bool) -> dict[str, Any]:
    _object(path, value, {"input", "output"})
    if "input" in value:
        p = f"{path}.input"
        inp = _object(p, value["input"],
                      {"format", "noise_reduction", "transcription", "turn_detection"})
        cur = current["input"]
        if "format" in inp:
            cur["format"] = _format(f"{p}.format", inp["format"])
        if "noise_reduction" in inp:
            cur["noise_reduction"] = _noise_reduction(f"{p}.noise_reduction",
                                                      inp["noise_reduction"])
        if "transcription" in inp:
            cur["transcription"] = _transcription(f"{p}.transcription", inp["transcription"])
        if "turn_detection" in inp:
            cur["turn_detection"] = _turn_detection(f"{p}.turn_detection",
                                                    inp["turn_detection"])
    if "output" in value:
        p = f"{path}.output"
        out = _object(p, value["output"], {"format", "voice", "speed"})
        cur = current["output"]
        if "format" in out:
            cur["format"] = _format(f"{p}.format", out["format"])
        if "voice" in out:
            voice = _string(f"{p}.voice", out["voice"])
            if voice not in VOICES:
                raise invalid_value(f"{p}.voice", voice, VOICES)
            if voice_locked and voice != cur["voice"]:
                # Code and text as reported in public issues against the live API.
                raise ClientError("cannot_update_voice",
                                  "Cannot update a conversation's voice if assistant audio "
                                  "is present.", f"{p}.voice")
            cur["voice"] = voice
        if "speed" in out:
            speed = out["speed"]
            if not _is_number(speed):
                raise invalid_type(f"{p}.speed", "a decimal", speed)
            if not 0.25 <= speed <= 1.5:
                raise invalid_value(f"{p}.speed", speed)
            cur["speed"] = float(speed)
    return current


def _format(path: str, value: Any) -> dict[str, Any]:
    fmt = _object(path, value, {"type", "rate"})
    if "type" not in fmt:
        raise missing(f"{path}.type")
    if fmt["type"] not in FORMAT_TYPES:
        raise invalid_value(f"{path}.type", fmt["type"], FORMAT_TYPES)
    if fmt["type"] == "audio/pcm":
        rate = fmt.get("rate", MODEL_RATE)
        if rate != MODEL_RATE or isinstance(rate, bool):  # ref: 24 kHz only
            raise invalid_value(f"{path}.rate", rate, [MODEL_RATE])
        return {"type": "audio/pcm", "rate": MODEL_RATE}
    if "rate" in fmt:  # G.711 is 8 kHz by definition; the rate field belongs to audio/pcm
        raise unknown(f"{path}.rate")
    return {"type": fmt["type"]}


def _noise_reduction(path: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    nr = _object(path, value, {"type"})
    if nr.get("type") not in ("near_field", "far_field"):
        raise invalid_value(f"{path}.type", nr.get("type"), ["near_field", "far_field"])
    return dict(nr)


def _transcription(path: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    tr = _object(path, value, {"model", "language", "prompt"})
    for key, v in tr.items():
        _string(f"{path}.{key}", v)
    return dict(tr)


def _turn_detection(path: str, value: Any) -> dict[str, Any] | None:
    if value is None:  # the client commits and calls response.create itself (ref)
        return None
    if not isinstance(value, dict):
        raise invalid_type(path, "an object", value)
    if "type" not in value:
        raise missing(f"{path}.type")
    kind = value["type"]
    if kind == "server_vad":
        td = _object(path, value, set(DEFAULT_SERVER_VAD))
        out = dict(DEFAULT_SERVER_VAD)
        for key, v in td.items():
            p = f"{path}.{key}"
            if key == "threshold":
                if not _is_number(v):
                    raise invalid_type(p, "a decimal", v)
                if not 0.0 <= v <= 1.0:
                    raise ClientError("decimal_above_max_value" if v > 1 else
                                      "decimal_below_min_value",
                                      f"Invalid '{p}': expected a value between 0 and 1, "
                                      f"but got {v} instead.", p)
            elif key in ("prefix_padding_ms", "silence_duration_ms"):
                if not _is_int(v):
                    raise invalid_type(p, "an integer", v)
                if v < 0:
                    raise invalid_value(p, v)
            elif key == "idle_timeout_ms":
                if v is not None and not _is_int(v):
                    raise invalid_type(p, "an integer", v)
            elif key in ("create_response", "interrupt_response") and not isinstance(v, bool):
                raise invalid_type(p, "a boolean", v)
            out[key] = v
        return out
    if kind == "semantic_vad":
        td = _object(path, value, set(DEFAULT_SEMANTIC_VAD))
        out = dict(DEFAULT_SEMANTIC_VAD)
        for key, v in td.items():
            p = f"{path}.{key}"
            if key == "eagerness" and v not in EAGERNESS:
                raise invalid_value(p, v, EAGERNESS)
            if key in ("create_response", "interrupt_response") and not isinstance(v, bool):
                raise invalid_type(p, "a boolean", v)
            out[key] = v
        return out
    raise invalid_value(f"{path}.type", kind, ["server_vad", "semantic_vad"])
