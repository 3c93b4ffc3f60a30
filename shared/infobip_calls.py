"""Calls API REST shapes: dialog creation, media-stream configs, and the error body.

Source: ../shared/reference/infobip-calls.md. Pure models, no I/O: the orchestrator's HTTP
client and the Infobip simulator both build and parse with these, so they cannot drift.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.infobip_events import Call, Platform


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_wire(self) -> dict[str, Any]:
        """JSON-ready dict with Infobip's camelCase names, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class WebsocketEndpoint(_Wire):
    type: Literal["WEBSOCKET"] = "WEBSOCKET"
    websocket_endpoint_config_id: str = Field(..., alias="websocketEndpointConfigId")
    identifier: str | None = None


class PhoneEndpoint(_Wire):
    """Transfers go to a phone number (a dialog from the caller to a PHONE child)."""

    type: Literal["PHONE"] = "PHONE"
    phone_number: str = Field(..., alias="phoneNumber")


class ChildCallRequest(_Wire):
    endpoint: WebsocketEndpoint | PhoneEndpoint = Field(..., discriminator="type")
    from_: str | None = Field(None, alias="from")
    from_display_name: str | None = Field(None, alias="fromDisplayName")
    connect_timeout: int | None = Field(None, alias="connectTimeout")
    custom_data: dict[str, str] | None = Field(None, alias="customData")


class PropagationOptions(_Wire):
    child_call_hangup: bool | None = Field(None, alias="childCallHangup")
    child_call_ringing: bool | None = Field(None, alias="childCallRinging")


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
