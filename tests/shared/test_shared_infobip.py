"""The Infobip models parse the documented shapes and keep what they don't know."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from pydantic import ValidationError

from callbridge.shared.infobip_calls import (
    DialogRequest,
    MediaStreamConfig,
    error_body,
    parse_error_body,
)
from callbridge.shared.infobip_events import (
    CallsEvent,
    EventType,
    format_infobip_time,
    parse_infobip_time,
)
from callbridge.shared.infobip_media import (
    CLEAR_MESSAGE,
    MAX_CUSTOM_KEYS,
    MAX_KEY_NAMES,
    Connected,
    Dtmf,
    MediaProtocolError,
    UnknownControl,
    build_connected,
    frame_bytes,
    is_clear,
    parse_control,
)

CALL_RECEIVED = b"""{
  "callId": "c-1", "timestamp": "2026-01-15T12:00:00.000+0000",
  "callsConfigurationId": "cfg", "platform": {"applicationId": "app", "entityId": "ent"},
  "type": "CALL_RECEIVED",
  "properties": {"call": {"id": "c-1", "endpoint": {"type": "PHONE", "phoneNumber": "441"},
                          "from": "441", "to": "442", "direction": "INBOUND", "state": "CALLING",
                          "futureField": 1},
                 "apiBaseUrl": "https://x.api.infobip.com"}
}"""


def test_timestamps_with_and_without_colon_and_z() -> None:
    expected = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert parse_infobip_time("2026-01-15T12:00:00.000+0000") == expected
    assert parse_infobip_time("2026-01-15T12:00:00.000+00:00") == expected
    assert parse_infobip_time("2026-01-15T12:00:00Z") == expected
    plus2 = datetime(2026, 1, 15, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert parse_infobip_time("2026-01-15T14:00:00.000+0200") == plus2
    assert format_infobip_time(expected) == "2026-01-15T12:00:00.000+0000"


def test_call_received_parses_and_keeps_unknown_fields() -> None:
    event = CallsEvent.model_validate_json(CALL_RECEIVED)
    assert event.known_type is EventType.CALL_RECEIVED
    assert event.subject_call_id() == "c-1"
    call = event.properties.call
    assert call is not None and call.to == "442" and call.from_ == "441"
    assert call.model_extra == {"futureField": 1}
    assert event.properties.api_base_url == "https://x.api.infobip.com"


def test_unknown_event_type_is_kept_not_rejected() -> None:
    event = CallsEvent.model_validate({"type": "CONFERENCE_COMPOSITION_DONE", "conferenceId": "k",
                                       "properties": {"anything": [1, 2]}})
    assert event.known_type is None
    assert event.type == "CONFERENCE_COMPOSITION_DONE"
    assert event.properties.model_extra == {"anything": [1, 2]}


def test_call_finished_carries_only_call_log_with_call_id() -> None:
    event = CallsEvent.model_validate({
        "type": "CALL_FINISHED", "properties": {"callLog": {
            "callId": "c-9", "state": "FINISHED", "hangupSource": "ENDPOINT",
            "errorCode": {"id": 10000, "name": "NORMAL_HANGUP"}}}})
    assert event.subject_call_id() == "c-9"
    assert event.properties.call_log is not None
    assert event.properties.call_log.error_code is not None
    assert event.properties.call_log.error_code.name == "NORMAL_HANGUP"


def test_event_without_type_is_invalid() -> None:
    with pytest.raises(ValidationError):
        CallsEvent.model_validate({"callId": "x"})


def test_dialog_request_wire_shape() -> None:
    body = DialogRequest.model_validate({
        "parentCallId": "c-1",
        "childCallRequest": {"endpoint": {"type": "WEBSOCKET", "websocketEndpointConfigId": "m"},
                             "customData": {"cbToken": "t"}},
        "propagationOptions": {"childCallHangup": False},
    }).to_wire()
    assert body == {"parentCallId": "c-1",
                    "childCallRequest": {"endpoint": {"type": "WEBSOCKET",
                                                      "websocketEndpointConfigId": "m"},
                                         "customData": {"cbToken": "t"}},
                    "propagationOptions": {"childCallHangup": False}}


def test_phone_endpoint_for_transfers() -> None:
    body = DialogRequest.model_validate({
        "parentCallId": "c-1",
        "childCallRequest": {"endpoint": {"type": "PHONE", "phoneNumber": "4411"}},
    }).to_wire()
    assert body["childCallRequest"]["endpoint"] == {"type": "PHONE", "phoneNumber": "4411"}


def test_media_stream_config_sample_rate_is_a_string() -> None:
    cfg = MediaStreamConfig(name="n", url="wss://gw/media", sample_rate="24000")
    assert cfg.to_wire()["sampleRate"] == "24000"
    with pytest.raises(ValidationError):
        MediaStreamConfig.model_validate({"name": "n", "url": "u", "sampleRate": "48000"})


def test_error_body_round_trip_and_garbage() -> None:
    body = error_body("TOO_MANY_REQUESTS", "slow down")
    assert parse_error_body(body) == ("TOO_MANY_REQUESTS", "slow down")
    assert parse_error_body("<html>")[0] == ""


def test_media_connected_flattens_custom_data() -> None:
    text = build_connected(16000, {"cbToken": "tok", "cbCallId": "c-1"})
    msg = parse_control(text)
    assert isinstance(msg, Connected)
    assert (msg.content_type, msg.sample_rate) == ("audio/l16;rate=16000", 16000)
    assert (msg.custom("cbToken"), msg.custom("cbCallId")) == ("tok", "c-1")
    assert msg.location("cbToken") == "top" and msg.location("cbProfile") == "missing"
    assert frame_bytes(16000) == 640 and frame_bytes(24000) == 960


def test_media_connected_reads_nested_custom_data_in_any_case() -> None:
    """Whether Infobip flattens customData or nests it is not published: both are read,
    key names without regard to case, and a top-level key wins over a nested one."""
    msg = parse_control('{"event":"websocket:connected","content-type":"audio/l16;rate=8000",'
                        '"customData":{"CBTOKEN":"tok","cbcallid":"c-1","n":{"deep":1}},'
                        '"cbCallId":"top-wins"}')
    assert isinstance(msg, Connected)
    assert msg.custom("cbToken") == "tok" and msg.location("cbToken") == "customData"
    assert msg.custom("cbCallId") == "top-wins" and msg.location("cbCallId") == "top"
    assert msg.custom("n") == ""  # nested objects are not values
    assert msg.describe_keys() == "event, content-type, cbCallId, customData{CBTOKEN, cbcallid, n}"
    # a nested customData that is not an object is ignored, not an error
    odd = parse_control('{"event":"websocket:connected","content-type":"audio/l16;rate=8000",'
                        '"customData":"cbToken=tok"}')
    assert isinstance(odd, Connected) and odd.custom("cbToken") == ""
    assert odd.nested_key_names is None


def test_media_connected_bounds_what_a_peer_can_make_it_hold() -> None:
    many = {f"k{i}": "v" for i in range(500)}
    msg = parse_control(orjson.dumps({"event": "websocket:connected",
                                      "content-type": "audio/l16;rate=8000",
                                      "customData": many, **many}).decode())
    assert isinstance(msg, Connected)
    assert len(msg.custom_data) <= MAX_CUSTOM_KEYS
    assert len(msg.key_names) <= MAX_KEY_NAMES
    assert msg.nested_key_names is not None and len(msg.nested_key_names) <= MAX_KEY_NAMES


def test_media_control_messages() -> None:
    assert parse_control('{"event":"websocket:dtmf","digit":"3","duration":250}') == Dtmf("3", 250)
    assert isinstance(parse_control('{"event":"something:new"}'), UnknownControl)
    assert is_clear(CLEAR_MESSAGE) and not is_clear(b"\x00\x01")
    for bad in ("not json", "[1]", '{"event":"websocket:connected","content-type":"audio/pcmu"}',
                '{"event":"websocket:connected","content-type":"audio/l16"}',
                '{"event":"websocket:dtmf"}'):
        with pytest.raises(MediaProtocolError):
            parse_control(bad)


def test_dialog_events_are_about_the_parent_call() -> None:
    event = CallsEvent.model_validate({
        "type": "DIALOG_ESTABLISHED", "dialogId": "d-1",
        "properties": {"dialog": {"id": "d-1", "state": "ESTABLISHED",
                                  "parentCall": {"id": "caller-1"},
                                  "childCall": {"id": "media-1"}}}})
    assert event.subject_call_id() == "caller-1"


def test_dialog_event_naming_the_child_in_its_envelope_is_still_about_the_caller() -> None:
    """One rule for every reader (ingress stream field, orchestrator): the dialog's parent
    wins over an envelope callId, which for a dialog event may name the child leg."""
    event = CallsEvent.model_validate({
        "type": "DIALOG_FINISHED", "dialogId": "d-1", "callId": "media-1",
        "properties": {"dialog": {"id": "d-1", "state": "FINISHED",
                                  "parentCall": {"id": "caller-1"},
                                  "childCall": {"id": "media-1"}}}})
    assert event.subject_call_id() == "caller-1"
