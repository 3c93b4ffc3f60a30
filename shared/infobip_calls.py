"""Calls API REST shapes: dialog creation, media-stream configs, and the error body.

Source: Infobip's Calls API reference and its published Voice OpenAPI document
(https://www.infobip.com/docs/api; the copy the simulator checks against is described in
docs/protocol-assumptions.md). Pure models, no I/O: the orchestrator builds and parses
with these; the Infobip simulator judges what they produce against the published document.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from callbridge.shared.infobip_events import Call, Platform


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_wire(self) -> dict[str, Any]:
        """JSON-ready dict with Infobip's camelCase names, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class WebsocketEndpoint(_Wire):
    type: Literal["WEBSOCKET"] = "WEBSOCKET"
    websocket_endpoint_config_id: str = Field(..., alias="websocketEndpointConfigId")
    identifier: str | None = None


#: what `wire_phone_number` removes: the punctuation people write numbers with
_PHONE_PUNCTUATION = re.compile(r"[\s+()\-]")
#: the digits it keeps (3 to 20 of them: short codes up to E.164's 15 digits with margin)
_PHONE_DIGITS = re.compile(r"[0-9]{3,20}")


def wire_phone_number(raw: str) -> str | None:
    """`raw` as the spec writes phone numbers on the wire, or None if it is not one.

    The spec describes `phoneNumber` (PhoneEndpoint) and `from` (DialogCallRequest, for calls
    to PHONE) as "in the E.164 format" and writes every example as bare digits, country code
    first, no `+` (`41793026727`); no pattern is published, so "digits only, 3 to 20 of them"
    is inferred from those examples. `+`, whitespace, dashes and parentheses are removed
    ("+41 (79) 302-6727" -> "41793026727"); anything else (letters, dots, `*`) is refused."""
    digits = _PHONE_PUNCTUATION.sub("", raw)
    return digits if _PHONE_DIGITS.fullmatch(digits) else None


class PhoneEndpoint(_Wire):
    """Transfers go to a phone number (a dialog from the caller to a PHONE child).
    `phone_number` is sent as given: callers pass it through `wire_phone_number` first
    (profiles do so when they load, shared/profiles.py)."""

    type: Literal["PHONE"] = "PHONE"
    phone_number: str = Field(..., alias="phoneNumber")


class ChildCallRequest(_Wire):
    endpoint: WebsocketEndpoint | PhoneEndpoint = Field(..., discriminator="type")
    from_: str | None = Field(None, alias="from")
    from_display_name: str | None = Field(None, alias="fromDisplayName")
    connect_timeout: int | None = Field(None, alias="connectTimeout")
    custom_data: dict[str, str] | None = Field(None, alias="customData")


class RingbackGeneration(_Wire):
    """`propagationOptions.ringbackGeneration`: the platform plays its own ringback tone to
    the parent call while the child rings. The spec: "It applies only to `INBOUND` parent
    calls in the `CALLING` state; otherwise, it is ignored", and it cannot be enabled
    together with `childCallRinging`."""

    enabled: bool


class PropagationOptions(_Wire):
    child_call_hangup: bool | None = Field(None, alias="childCallHangup")
    child_call_ringing: bool | None = Field(None, alias="childCallRinging")
    ringback_generation: RingbackGeneration | None = Field(None, alias="ringbackGeneration")

    @model_validator(mode="after")
    def _ringing_or_ringback(self) -> PropagationOptions:
        # The spec: childCallRinging "Cannot be `true` when `ringbackGeneration` is enabled".
        if self.child_call_ringing and self.ringback_generation is not None \
                and self.ringback_generation.enabled:
            raise ValueError("childCallRinging and ringbackGeneration cannot both be on")
        return self


class DialogRequest(_Wire):
    """Body of POST /calls/1/dialogs."""

    parent_call_id: str = Field(..., alias="parentCallId")
    child_call_request: ChildCallRequest = Field(..., alias="childCallRequest")
    max_duration: int | None = Field(None, alias="maxDuration")
    propagation_options: PropagationOptions | None = Field(None, alias="propagationOptions")


DialogState = Literal["CREATED", "PRE_ESTABLISHED", "ESTABLISHED", "FINISHED", "FAILED",
                      "TRANSFERRING"]


class DialogResponse(_Wire):
    """201 body of POST /calls/1/dialogs (and GET /calls/1/dialogs/{id})."""

    id: str
    calls_configuration_id: str | None = Field(None, alias="callsConfigurationId")
    platform: Platform | None = None
    state: str
    start_time: str | None = Field(None, alias="startTime")
    establish_time: str | None = Field(None, alias="establishTime")
    end_time: str | None = Field(None, alias="endTime")
    parent_call: Call | None = Field(None, alias="parentCall")
    child_call: Call | None = Field(None, alias="childCall")


class HangupRequest(_Wire):
    error_code: str | None = Field(None, alias="errorCode")


class AnswerResponse(_Wire):
    status: Literal["PENDING", "IN_PROGRESS", "COMPLETED", "FAILED"]


class MediaStreamConfig(_Wire):
    """POST/GET /calls/1/media-stream-configs. `sampleRate` is a *string* on the wire."""

    id: str | None = None
    type: Literal["WEBSOCKET_ENDPOINT"] = "WEBSOCKET_ENDPOINT"
    name: str
    url: str
    sample_rate: Literal["8000", "16000", "24000", "32000"] = Field("8000", alias="sampleRate")


class Paging(_Wire):
    page: int
    size: int
    total_pages: int = Field(..., alias="totalPages")
    total_results: int = Field(..., alias="totalResults")


class MediaStreamConfigPage(_Wire):
    results: list[MediaStreamConfig]
    paging: Paging


ErrorMessageId = Literal[
    "BAD_REQUEST", "UNAUTHORIZED", "FORBIDDEN", "NOT_FOUND", "TOO_MANY_REQUESTS", "GENERAL_ERROR"
]


def error_body(
    message_id: str, text: str, validation_errors: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """Infobip's 4xx/5xx body: {"requestError": {"serviceException": {...}}}."""
    exc: dict[str, Any] = {"messageId": message_id, "text": text}
    if validation_errors:
        exc["validationErrors"] = validation_errors
    return {"requestError": {"serviceException": exc}}


def parse_error_body(body: Any) -> tuple[str, str]:
    """(messageId, text) from an error body, tolerating anything malformed."""
    try:
        exc = body["requestError"]["serviceException"]
        return str(exc.get("messageId", "")), str(exc.get("text", ""))
    except (KeyError, TypeError):
        return "", str(body)[:200]
