"""The Infobip models parse the documented shapes and keep what they don't know."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from shared.infobip_calls import (
    DialogRequest,
    MediaStreamConfig,
    error_body,
    parse_error_body,
)
from shared.infobip_events import CallsEvent, EventType, format_infobip_time, parse_infobip_time
from shared.infobip_media import (
    CLEAR_MESSAGE,
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
    assert msg == Connected("audio/l16;rate=16000", 16000, {"cbToken": "tok", "cbCallId": "c-1"})
    assert frame_bytes(16000) == 640 and frame_bytes(24000) == 960


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
