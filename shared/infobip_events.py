"""Infobip Calls API webhook events: the envelope and the properties callbridge reads.

Source: Infobip's Voice OpenAPI document 3.210.0, https://www.infobip.com/docs/api. Every model
keeps unknown fields (`extra="allow"`) and `type` is a plain string, so an event type or
field Infobip adds tomorrow is stored and replayable, never rejected.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

# The spec's examples write offsets without a colon (2026-01-15T12:00:00.000+0000);
# Python < 3.12 fromisoformat rejects that, so normalise before parsing.
_OFFSET_NO_COLON = re.compile(r"([+-]\d{2})(\d{2})$")


def parse_infobip_time(value: str) -> datetime:
    """Parse Infobip timestamps: `...+0000`, `...+00:00` and `...Z` alike."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    text = _OFFSET_NO_COLON.sub(r"\1:\2", text)
    return datetime.fromisoformat(text)


def format_infobip_time(value: datetime) -> str:
    """Format as the spec's examples do: milliseconds and a colon-less offset."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}" + (
        value.strftime("%z") or "+0000"
    )


#: An Infobip resource id (call, dialog, conference, bulk): the spec's are UUIDs or hex
#: strings. Ids end up in URL paths and Redis keys, so anything that could steer a path
#: (`/`, `?`, `%`, `#`, whitespace) is refused at the door rather than escaped later
#: (docs/protocol-assumptions.md, "Ids").
ResourceId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]


class EventType(StrEnum):
    """Event types callbridge acts on. Others are accepted and stored as plain strings."""

    CALL_RECEIVED = "CALL_RECEIVED"
    CALL_RINGING = "CALL_RINGING"
    CALL_PRE_ESTABLISHED = "CALL_PRE_ESTABLISHED"
    CALL_ESTABLISHED = "CALL_ESTABLISHED"
    CALL_FINISHED = "CALL_FINISHED"
    CALL_FAILED = "CALL_FAILED"
    DIALOG_CREATED = "DIALOG_CREATED"
    DIALOG_ESTABLISHED = "DIALOG_ESTABLISHED"
    DIALOG_FAILED = "DIALOG_FAILED"
    DIALOG_FINISHED = "DIALOG_FINISHED"
    MEDIA_STREAM_STARTED = "MEDIA_STREAM_STARTED"
    MEDIA_STREAM_FINISHED = "MEDIA_STREAM_FINISHED"
    MEDIA_STREAM_FAILED = "MEDIA_STREAM_FAILED"


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Platform(_Open):
    application_id: str | None = Field(None, alias="applicationId")
    entity_id: str | None = Field(None, alias="entityId")


class Endpoint(_Open):
    """PHONE {phoneNumber}, WEBRTC {identity}, SIP {username},
    WEBSOCKET {websocketEndpointConfigId}."""

    type: str
    phone_number: str | None = Field(None, alias="phoneNumber")
    identity: str | None = None
    display_name: str | None = Field(None, alias="displayName")
    username: str | None = None
    websocket_endpoint_config_id: str | None = Field(None, alias="websocketEndpointConfigId")
    identifier: str | None = None


class Call(_Open):
    """The call object inside CALL_RECEIVED, CALL_ESTABLISHED, ... and dialog objects."""

    id: ResourceId
    endpoint: Endpoint | None = None
    from_: str | None = Field(None, alias="from")
    to: str | None = None
    direction: str | None = None
    state: str | None = None
    parent_call_id: ResourceId | None = Field(None, alias="parentCallId")
    calls_configuration_id: str | None = Field(None, alias="callsConfigurationId")
    dialog_id: ResourceId | None = Field(None, alias="dialogId")
    custom_data: dict[str, str] | None = Field(None, alias="customData")


class ErrorCode(_Open):
    id: int | None = None
    name: str | None = None
    description: str | None = None


class CallLog(_Open):
    """CALL_FINISHED / CALL_FAILED carry only this: note `callId`, not `id`."""

    call_id: ResourceId | None = Field(None, alias="callId")
    state: str | None = None
    dialog_id: ResourceId | None = Field(None, alias="dialogId")
    parent_call_id: ResourceId | None = Field(None, alias="parentCallId")
    duration: int | None = None
    error_code: ErrorCode | None = Field(None, alias="errorCode")
    hangup_source: str | None = Field(None, alias="hangupSource")


class Dialog(_Open):
    id: ResourceId
    state: str | None = None
    parent_call: Call | None = Field(None, alias="parentCall")
    child_call: Call | None = Field(None, alias="childCall")


class EventProperties(_Open):
    """Union of the properties of the event types we read; all optional, extras kept."""

    call: Call | None = None
    api_base_url: str | None = Field(None, alias="apiBaseUrl")
    call_log: CallLog | None = Field(None, alias="callLog")
    dialog: Dialog | None = None
    error_code: ErrorCode | None = Field(None, alias="errorCode")
    hangup_source: str | None = Field(None, alias="hangupSource")


class CallsEvent(_Open):
    """The webhook envelope. `type` stays a str so unknown event types validate."""

    type: str = Field(..., min_length=1)
    call_id: ResourceId | None = Field(None, alias="callId")
    dialog_id: ResourceId | None = Field(None, alias="dialogId")
    conference_id: ResourceId | None = Field(None, alias="conferenceId")
    bulk_id: ResourceId | None = Field(None, alias="bulkId")
    timestamp: datetime | None = None
    calls_configuration_id: str | None = Field(None, alias="callsConfigurationId")
    platform: Platform | None = None
    properties: EventProperties = Field(default_factory=EventProperties)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _parse_timestamp(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_infobip_time(value)
        return value

    @property
    def known_type(self) -> EventType | None:
        try:
            return EventType(self.type)
        except ValueError:
            return None

    def subject_call_id(self) -> str | None:
        """The caller's call an event is about: the one definition, used by the ingress (the
        stream entry's `call_id`), the orchestrator and the tools.

        A dialog event is about the dialog's parent call, the caller, whose record every
        dialog event updates, whatever call its envelope names (the Infobip spec's
        DIALOG_* payloads carry the dialog, with `parentCall`; https://www.infobip.com/docs/api,
        "Calls API" webhooks). Otherwise the envelope's callId, else the call log's or the
        call object's id.
        """
        props = self.properties
        if props.dialog and props.dialog.parent_call and props.dialog.parent_call.id:
            return props.dialog.parent_call.id
        if self.call_id:
            return self.call_id
        if props.call_log and props.call_log.call_id:
            return props.call_log.call_id
        if props.call:
            return props.call.id
        return None
