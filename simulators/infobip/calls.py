"""Call and dialog state as the platform keeps it, and the JSON shapes it shows the world.

Every shape here follows Infobip's Calls API reference (https://www.infobip.com/docs/api) (Infobip
Voice OpenAPI 3.210.0): the call object (`id`, `endpoint`, `from`, `to`, `direction`, `state`,
`startTime`, `answerTime`, `endTime`, `parentCallId`, `callsConfigurationId`, `platform`,
`customData`, `dialogId`); the webhook envelope (`callId`/`dialogId` when the event concerns
one, `timestamp` like `2026-01-15T12:00:00.000+0000`, `callsConfigurationId`, `platform`,
`type`, `properties`; no `conversationId`, no top-level `applicationId`); `CALL_FINISHED` /
`CALL_FAILED` properties holding ONLY `callLog` (`callId`, not `id`); the REST dialog
(`platform {applicationId, entityId}`) versus the dialog inside events (`applicationId` /
`entityId` flat).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Error codes by name (source: reference, "numeric ids moved from 5xxx to 10xxx in October
#: 2024 (NORMAL_HANGUP is 10000): key on names"). Only NORMAL_HANGUP's id is sourced; the
#: others carry a name and description only (*unverified* ids are not invented).
NORMAL_HANGUP: dict[str, Any] = {"id": 10000, "name": "NORMAL_HANGUP",
                                 "description": "The call has ended with hangup initiated "
                                                "by caller, callee or API"}
CANCELLED: dict[str, Any] = {"name": "CANCELLED", "description": "The call was cancelled"}
#: Used when the media WebSocket cannot be opened (*unverified* name).
NETWORK_ERROR: dict[str, Any] = {"name": "NETWORK_ERROR",
                                 "description": "Media WebSocket could not be connected"}


def format_infobip_time(value: datetime) -> str:
    """As the published spec's examples write times: `2026-01-15T12:00:00.000+0000`
    (milliseconds, no colon in the offset). Kept here, not shared with the ingress's parser,
    so the simulator says what Infobip sends rather than what callbridge expects."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}" + (
        value.strftime("%z") or "+0000")


def now_utc() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def _fmt(value: datetime | None) -> str | None:
    return format_infobip_time(value) if value is not None else None


@dataclass
class Identity:
    """Who the platform says owns the traffic: calls configuration and application."""

    calls_configuration_id: str = "callbridge-sim-calls-config"
    application_id: str = "callbridge-sim-application"
    entity_id: str = "callbridge-sim-entity"

    def platform(self) -> dict[str, str]:
        return {"applicationId": self.application_id, "entityId": self.entity_id}


@dataclass
class CallState:
    """One call leg (the caller's inbound call, or a dialog's child call)."""

    endpoint: dict[str, Any]
    from_: str
    to: str
    direction: str            # INBOUND | OUTBOUND
    state: str                # RINGING | CALLING | ESTABLISHED | FINISHED | FAILED | ...
    id: str = field(default_factory=new_id)
    start_time: datetime = field(default_factory=now_utc)
    answer_time: datetime | None = None
    end_time: datetime | None = None
    parent_call_id: str | None = None
    dialog_id: str | None = None
    custom_data: dict[str, str] | None = None
    error_code: dict[str, Any] | None = None
    hangup_source: str | None = None

    @property
    def ended(self) -> bool:
        return self.end_time is not None

    def answer(self) -> None:
        if self.answer_time is None:
            self.answer_time = now_utc()
        self.state = "ESTABLISHED"

    def end(self, state: str, error_code: dict[str, Any], hangup_source: str) -> None:
        self.state = state
        self.end_time = now_utc()
        self.error_code = error_code
        self.hangup_source = hangup_source

    def duration_s(self) -> int:
        """Seconds talked (answer to end); 0 for a call never answered."""
        if self.answer_time is None or self.end_time is None:
            return 0
        return int((self.end_time - self.answer_time).total_seconds())

    def to_wire(self, ident: Identity) -> dict[str, Any]:
        """The call object (REST answers and `properties.call` in live-call events)."""
        body: dict[str, Any] = {
            "id": self.id, "endpoint": self.endpoint, "from": self.from_, "to": self.to,
            "direction": self.direction, "state": self.state,
            "startTime": _fmt(self.start_time), "answerTime": _fmt(self.answer_time),
            "endTime": _fmt(self.end_time), "parentCallId": self.parent_call_id,
            "callsConfigurationId": ident.calls_configuration_id,
            "platform": ident.platform(), "customData": self.custom_data,
            "dialogId": self.dialog_id,
        }
        return {k: v for k, v in body.items() if v is not None}

    def call_log(self, ident: Identity) -> dict[str, Any]:
        """`properties.callLog` of CALL_FINISHED / CALL_FAILED: `callId`, not `id`."""
        body: dict[str, Any] = {
            "callId": self.id, "endpoint": self.endpoint, "from": self.from_, "to": self.to,
            "direction": self.direction, "state": self.state,
            "startTime": _fmt(self.start_time), "answerTime": _fmt(self.answer_time),
            "endTime": _fmt(self.end_time), "duration": self.duration_s(),
            "parentCallId": self.parent_call_id, "dialogId": self.dialog_id,
            "callsConfigurationId": ident.calls_configuration_id,
            "platform": ident.platform(), "errorCode": self.error_code,
            "hangupSource": self.hangup_source, "customData": self.custom_data,
        }
        return {k: v for k, v in body.items() if v is not None}


@dataclass
class DialogState:
    """A dialog: the caller's call (parent) bridged to a child call."""

    parent: CallState
    child: CallState
    request: dict[str, Any]
    child_call_hangup: bool   # propagationOptions.childCallHangup, default true (reference)
    config: dict[str, Any] | None = None   # media-stream config for WEBSOCKET children
    id: str = field(default_factory=new_id)
    state: str = "CREATED"
    start_time: datetime = field(default_factory=now_utc)
    establish_time: datetime | None = None
    end_time: datetime | None = None
    error_code: dict[str, Any] | None = None
    hangup_source: str | None = None

    @property
    def active(self) -> bool:
        return self.state not in ("FINISHED", "FAILED")

    def end(self, state: str, error_code: dict[str, Any], hangup_source: str) -> None:
        self.state = state
        self.end_time = now_utc()
        self.error_code = error_code
        self.hangup_source = hangup_source

    def _common(self, ident: Identity) -> dict[str, Any]:
        return {"id": self.id, "callsConfigurationId": ident.calls_configuration_id,
                "state": self.state, "startTime": _fmt(self.start_time),
                "establishTime": _fmt(self.establish_time), "endTime": _fmt(self.end_time),
                "parentCall": self.parent.to_wire(ident),
                "childCall": self.child.to_wire(ident)}

    def to_wire(self, ident: Identity) -> dict[str, Any]:
        """REST shape (DialogResponse): `platform {applicationId, entityId}`."""
        body = self._common(ident)
        body["platform"] = ident.platform()
        return {k: v for k, v in body.items() if v is not None}

    def to_event(self, ident: Identity) -> dict[str, Any]:
        """Shape inside DIALOG_* events: `applicationId` / `entityId` flat."""
        body = self._common(ident)
        body["applicationId"] = ident.application_id
        body["entityId"] = ident.entity_id
        return {k: v for k, v in body.items() if v is not None}


def envelope(ident: Identity, event_type: str, properties: dict[str, Any],
             call_id: str | None = None, dialog_id: str | None = None) -> dict[str, Any]:
    """The webhook envelope; `callId` / `dialogId` only when the event concerns one."""
    body: dict[str, Any] = {}
    if call_id:
        body["callId"] = call_id
    if dialog_id:
        body["dialogId"] = dialog_id
    body.update({"timestamp": format_infobip_time(now_utc()),
                 "callsConfigurationId": ident.calls_configuration_id,
                 "platform": ident.platform(), "type": event_type, "properties": properties})
    return body


def live_call_event(ident: Identity, event_type: str, call: CallState,
                    api_base_url: str) -> dict[str, Any]:
    """CALL_RECEIVED, CALL_ESTABLISHED, ...: `properties {call, apiBaseUrl}`."""
    return envelope(ident, event_type, {"call": call.to_wire(ident), "apiBaseUrl": api_base_url},
                    call_id=call.id, dialog_id=call.dialog_id)


def call_end_event(ident: Identity, event_type: str, call: CallState) -> dict[str, Any]:
    """CALL_FINISHED / CALL_FAILED: properties hold ONLY `callLog`."""
    return envelope(ident, event_type, {"callLog": call.call_log(ident)},
                    call_id=call.id, dialog_id=call.dialog_id)


def dialog_event(ident: Identity, event_type: str, dialog: DialogState,
                 api_base_url: str | None = None) -> dict[str, Any]:
    """DIALOG_CREATED (`dialog`, `apiBaseUrl`), DIALOG_ESTABLISHED (`dialog`),
    DIALOG_FINISHED / DIALOG_FAILED (`dialog`, `errorCode`, `hangupSource`)."""
    props: dict[str, Any] = {"dialog": dialog.to_event(ident)}
    if api_base_url is not None:
        props["apiBaseUrl"] = api_base_url
    if dialog.state in ("FINISHED", "FAILED"):
        props["errorCode"] = dialog.error_code
        props["hangupSource"] = dialog.hangup_source
    return envelope(ident, event_type, props, dialog_id=dialog.id)
