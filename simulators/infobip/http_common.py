"""Pieces every Calls API handler shares: the recorded request, the error answer, JSON body.

Error body: Infobip's `ApiException` (`{"requestError": {"serviceException": {messageId,
text, validationErrors?}}}`) as the published OpenAPI document defines it; every answer is
checked against that document (`spec_validation`), so the shape is built here from plain
dicts and deliberately not shared with the orchestrator's parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

#: request keys set by the middleware: the parsed body, or why it is not JSON
JSON_KEY: web.RequestKey[Any] = web.RequestKey("sim_json", object)
JSON_ERROR_KEY: web.RequestKey[str] = web.RequestKey("sim_json_error", str)


@dataclass
class RecordedRequest:
    """One API request as the simulator saw it (`status` filled when answered)."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    at: float                      # unix seconds of arrival
    status: int = 0
    query: dict[str, str] = field(default_factory=dict)
    faulted: bool = False          # answered (or delayed) by sim.faults / the throttle
    early: bool = False            # arrived before an announced Retry-After elapsed
    answered_at: float | None = None
    #: why the published spec refuses this request (answered 400); empty when it is valid
    spec_problems: dict[str, list[str]] = field(default_factory=dict)


def error_body(message_id: str, text: str,
               validation_errors: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Infobip's 4xx/5xx body (ApiException in the published spec)."""
    exc: dict[str, Any] = {"messageId": message_id, "text": text}
    if validation_errors:
        exc["validationErrors"] = validation_errors
    return {"requestError": {"serviceException": exc}}


def error_response(status: int, message_id: str, text: str,
                   validation_errors: dict[str, list[str]] | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(message_id, text, validation_errors), status=status,
                             headers=headers)


def bad_request(text: str, validation_errors: dict[str, list[str]] | None = None
                ) -> web.Response:
    return error_response(400, "BAD_REQUEST", text, validation_errors)


def not_found(what: str, ident: str) -> web.Response:
    return error_response(404, "NOT_FOUND", f"{what} {ident} not found")


def json_object(request: web.Request, required: bool = True
                ) -> tuple[dict[str, Any] | None, web.Response | None]:
    """(body, None) or (None, 400 answer). An absent body is {} unless `required`."""
    if request.get(JSON_ERROR_KEY):
        return None, bad_request("request body is not valid JSON",
                                 {"body": [str(request[JSON_ERROR_KEY])]})
    body = request.get(JSON_KEY)
    if body is None:
        if required:
            return None, bad_request("a JSON request body is required",
                                     {"body": ["must not be empty"]})
        return {}, None
    if not isinstance(body, dict):
        return None, bad_request("request body must be a JSON object",
                                 {"body": ["must be a JSON object"]})
    return body, None


REC_KEY: web.RequestKey[RecordedRequest] = web.RequestKey("sim_record", RecordedRequest)
