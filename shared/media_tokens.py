"""The one-time media token: the orchestrator mints it with each WEBSOCKET dialog, the gateway
spends it when Infobip's media socket presents it (`websocket:connected` customData).

Its Redis record (`redis_keys.media_token`, GETDEL to use, TTL MEDIA_TOKEN_TTL_S) is JSON:

- `call_id`, `profile`: whose call, and which agent profile serves it;
- `expires_at`: Unix seconds (also bounded by the key's TTL);
- `generation`: the call's media generation this dialog was made for (0 for the first
  dialog; each re-bridge after a lost gateway adds one). The gateway records it with the
  session and stops sending the moment the call record's `media_gen` is newer (fencing);
- `resume`: true when the dialog re-bridges a call whose gateway was lost: the gateway
  re-seeds the model with the conversation so far instead of greeting the caller again.

A record written before `generation`/`resume` existed reads as generation 0, no resume.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class MediaTokenRecord:
    call_id: str
    profile: str
    expires_at: int
    generation: int = 0
    resume: bool = False

    def to_json(self) -> bytes:
        return orjson.dumps({"call_id": self.call_id, "profile": self.profile,
                             "expires_at": self.expires_at, "generation": self.generation,
                             "resume": self.resume})

    @classmethod
    def mint(cls, call_id: str, profile: str, ttl_s: int, generation: int = 0,
             resume: bool = False) -> MediaTokenRecord:
        return cls(call_id, profile, int(time.time()) + ttl_s, generation, resume)

    @classmethod
    def from_json(cls, raw: bytes | str) -> MediaTokenRecord | None:
        """The record, or None when it is not a well-formed one (never trusted blindly:
        Redis may hold anything a key's writer put there)."""
        try:
            data: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
        call_id, profile = data.get("call_id"), data.get("profile")
        expires_at, generation = data.get("expires_at"), data.get("generation", 0)
        resume = data.get("resume", False)
        if not isinstance(call_id, str) or not isinstance(profile, str):
            return None
        if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
            return None
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
            return None
        if not isinstance(resume, bool):
            return None
        return cls(call_id, profile, int(expires_at), generation, resume)

    @property
    def expired(self) -> bool:
        return self.expires_at < time.time()
