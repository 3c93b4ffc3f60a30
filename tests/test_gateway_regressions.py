"""Regression (found by the fault suite, scenario 10 full run): a model `audio.delta` whose
`delta` is a string with non-ASCII characters makes `binascii.a2b_base64` raise ValueError,
which `relay.on_model_event` does not catch, so the session's model task fails and the call
is closed with 1011 — although the relay promises "Never raises: a bad event is logged and
skipped" (services/media_gateway/relay.py, `_on_audio_delta` / the except tuple of
`on_model_event`)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson

from services.media_gateway import relay


class _Barge:
    def is_cancelled(self, response_id: object) -> bool:
        return False

    def item(self, item_id: str, response_id: str) -> Any:
        return SimpleNamespace(generated_ms=0.0)


def test_non_ascii_audio_delta_is_skipped_not_raised() -> None:
    session: Any = SimpleNamespace(barge=_Barge(), ending_notice=False)
    raw = orjson.dumps({"type": "response.output_audio.delta", "response_id": "resp_1",
                        "item_id": "item_1", "delta": "AAAA\u00e9AAA"})
    relay.on_model_event(session, raw, 0.0)  # must not raise
