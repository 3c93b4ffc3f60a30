"""GA Realtime events: the session.update shape and cheap type routing."""

from __future__ import annotations

import orjson

from callbridge.shared import realtime_events as rt
from callbridge.shared.profiles import AgentProfile, ProfileBook, TurnDetection


def test_session_update_is_ga_shaped() -> None:
    profile = AgentProfile(instructions="Be brief.", voice="cedar")
    event = rt.session_update(rt.session_config(profile, "gpt-realtime", tools=[]))
    session = event["session"]
    assert event["type"] == "session.update" and event["event_id"].startswith("cfg_")
    assert session["type"] == "realtime" and session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"] == {"format": {"type": "audio/pcm", "rate": 24000},
                                          "voice": "cedar"}
    vad = session["audio"]["input"]["turn_detection"]
    assert vad["type"] == "server_vad" and vad["silence_duration_ms"] == 500
    # No beta-era keys anywhere.
    text = rt.dumps(event)
    for beta in ("modalities\":", "input_audio_format", "turnDetection", "temperature"):
        assert beta not in text.replace("output_modalities", "")


def test_semantic_vad_uses_eagerness() -> None:
    profile = AgentProfile(turn_detection=TurnDetection(type="semantic_vad", eagerness="high"))
    vad = rt.session_config(profile, "m", [])["audio"]["input"]["turn_detection"]
    assert vad == {"type": "semantic_vad", "eagerness": "high", "create_response": True,
                   "interrupt_response": True}


def test_peek_type_reads_top_level_type_only() -> None:
    delta = orjson.dumps({"type": "response.output_audio.delta", "delta": "AAAA"})
    assert rt.peek_type(delta) == rt.AUDIO_DELTA
    err = orjson.dumps({"type": "error", "error": {"type": "invalid_request_error"}})
    assert rt.peek_type(err) == "error"
    assert rt.peek_type(b'{"type" : "session.created"}') == "session.created"
    assert rt.peek_type(b"{}") is None


def test_truncate_and_event_ids_are_unique() -> None:
    a, b = rt.item_truncate("it", 120), rt.item_truncate("it", 240)
    assert a["event_id"] != b["event_id"]
    assert a["content_index"] == 0 and b["audio_end_ms"] == 240


def test_profile_routing_number_then_configuration_then_default(tmp_path) -> None:  # type: ignore[no-untyped-def]
    book = ProfileBook.model_validate({
        "profiles": {"sales": {"voice": "ash"}, "support": {}},
        "routes": {"by_number": {"+1": "sales"}, "by_calls_configuration": {"cfg": "support"},
                   "default": "support"}})
    assert book.choose("+1", "cfg").name == "sales"
    assert book.choose("+2", "cfg").name == "support"
    assert book.choose(None, None).name == "support"
    assert book.get("nope").name == "support"


def test_peek_type_when_type_is_not_the_first_key() -> None:
    """JSON key order is free (RFC 8259): a nested `type` first, or `type` after a long
    payload, must still route on the event's own type."""
    err = b'{"event_id":"e1","error":{"type":"invalid_request_error","code":"x"},"type":"error"}'
    assert rt.peek_type(err) == rt.ERROR
    delta = orjson.dumps({"delta": "A" * 4000, "response_id": "r", "item_id": "i",
                          "type": rt.AUDIO_DELTA})
    assert rt.peek_type(delta) == rt.AUDIO_DELTA
    item = b'{"item":{"type":"message"},"type":"conversation.item.added"}'
    assert rt.peek_type(item) == "conversation.item.added"
    assert rt.peek_type(b'{"type":1}') is None and rt.peek_type(b"not json") is None
