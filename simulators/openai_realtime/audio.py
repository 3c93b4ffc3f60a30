"""Scripted replies and their audio, encoded once per WAV and wire format.

The model's answers are real speech clips (ASSETS_DIR), so the gateway's tests can check
that callers hear audible agent audio. A 200-call benchmark must not re-read or re-encode a
WAV per response: `encoded_reply_audio` caches base64 chunks per (WAV, format, chunk size).
G.711 (audio/pcmu, audio/pcma: 8 kHz, ref "session.update") is converted with lookup tables.
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from callbridge.shared.pcm import read_wav, resample
from callbridge.simulators import ASSETS_DIR

PCM_RATE = 24000
G711_RATE = 8000


@dataclass(frozen=True, eq=False)
class Reply:
    """One scripted model turn: speech from `wav` (None: no audio) and/or a tool call.

    `transcript` is what the audio says (sent as output_audio_transcript events);
    `tool_call` = (name, arguments) makes the response also carry a function_call item.
    `status` is how the response ends when nobody cancels it: `incomplete` (cut by
    max_output_tokens) and `failed` exist on the live service (`response.done`'s
    `response.status`), and a bridge must not act on their tool calls.
    """

    wav: Path | str | None = ASSETS_DIR / "agent_answer.wav"
    transcript: str = ""
    tool_call: tuple[str, dict[str, Any]] | None = None
    status: Literal["completed", "incomplete", "failed"] = "completed"


GREETING = Reply(ASSETS_DIR / "agent_greeting.wav",
                 "Hello, thanks for calling. How can I help you today?")
ANSWER = Reply(ASSETS_DIR / "agent_answer.wav",
               "Of course. Your order shipped yesterday and should arrive tomorrow. "
               "Is there anything else I can do for you?")
#: First response greets, every later one answers (a script's last entry repeats).
DEFAULT_SCRIPT: tuple[Reply, ...] = (GREETING, ANSWER)


def reply_for(script: tuple[Reply, ...] | list[Reply], index: int) -> Reply:
    return script[min(index, len(script) - 1)]


def bytes_per_ms(format_type: str) -> int:
    """PCM16 at 24 kHz is 48 bytes per ms (ref); G.711 is one byte per sample at 8 kHz."""
    return 48 if format_type == "audio/pcm" else 8


@dataclass(frozen=True)
class EncodedAudio:
    chunks: tuple[str, ...]  # base64, ready to put in response.output_audio.delta
    sizes: tuple[int, ...]  # raw bytes per chunk (for ms accounting)
    total_bytes: int


@functools.lru_cache(maxsize=64)
def encoded_reply_audio(wav: str, format_type: str, chunk_ms: int) -> EncodedAudio:
    """Read, convert and chunk a WAV once; every later response reuses the strings."""
    pcm, rate = read_wav(wav)
    if format_type == "audio/pcm":
        raw = resample(pcm, rate, PCM_RATE)
    else:
        narrow = np.frombuffer(resample(pcm, rate, G711_RATE), dtype="<i2")
        raw = encode_g711(narrow, format_type)
    step = chunk_ms * bytes_per_ms(format_type)
    parts = [raw[i:i + step] for i in range(0, len(raw), step)]
    return EncodedAudio(tuple(base64.b64encode(p).decode() for p in parts),
                        tuple(len(p) for p in parts), len(raw))


# G.711 (ITU-T G.711 mu-law / A-law), table driven -----------------------------------------

def _ulaw_to_linear(u: int) -> int:
    u = ~u & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return (0x84 - t) if u & 0x80 else (t - 0x84)


def _alaw_to_linear(a: int) -> int:
    a ^= 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


@functools.lru_cache(maxsize=2)
def _decode_table(format_type: str) -> np.ndarray:
    fn = _ulaw_to_linear if format_type == "audio/pcmu" else _alaw_to_linear
    return np.array([fn(i) for i in range(256)], dtype="<i2")


@functools.lru_cache(maxsize=2)
def _encode_table(format_type: str) -> np.ndarray:
    """For every int16 value, the code whose decoded value is nearest (built once, ~65k)."""
    decoded = _decode_table(format_type).astype(np.int32)
    order = np.argsort(decoded, kind="stable")
    levels = decoded[order]
    values = np.arange(-32768, 32768, dtype=np.int32)
    idx = np.clip(np.searchsorted(levels, values), 1, len(levels) - 1)
    lower_closer = (values - levels[idx - 1]) <= (levels[idx] - values)
    best = np.where(lower_closer, idx - 1, idx)
    return order[best].astype(np.uint8)


def encode_g711(pcm16: np.ndarray, format_type: str) -> bytes:
    return bytes(_encode_table(format_type)[pcm16.astype(np.int32) + 32768].tobytes())


def decode_g711(data: bytes, format_type: str) -> bytes:
    """G.711 bytes -> PCM16 at 8 kHz (for the VAD)."""
    table = _decode_table(format_type)
    return bytes(table[np.frombuffer(data, dtype=np.uint8)].tobytes())
