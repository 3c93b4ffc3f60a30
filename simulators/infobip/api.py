"""The simulated Calls API over aiohttp: auth, recording, faults, dialogs and calls.

Source for every route and status: Infobip's Calls API reference
(https://www.infobip.com/docs/api) and its published OpenAPI document (spec/ here):
`Authorization: App <key>`; `POST /calls/1/dialogs` -> 201 with the dialog (documented
errors 400, 401, 403, 404, 429, 500; no 409), throttled at 20 requests/s;
`POST /calls/1/calls/{id}/answer` needs a JSON body and answers `{"status": ...}`, not a
call; `POST /calls/1/calls/{id}/hangup` (body optional) and `GET` return the call;
`POST /calls/1/dialogs/{id}/hangup` ends every call in the dialog.

Validity is the published spec's (`spec_validation`, Infobip's Voice OpenAPI document):
the middleware checks every request body of an operation the spec documents and refuses an
invalid one as the real API does (400 BAD_REQUEST, ApiException body with
`validationErrors`), recording it in `sim.invalid_requests`; it checks every answer too, and
an answer the spec rejects is the simulator's own bug: logged, recorded in
`sim.spec_violations` and raised (the client gets a 500).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from . import configs
from .calls import CallState, DialogState
from .faults import fault_body
from .http_common import (
    JSON_ERROR_KEY,
    JSON_KEY,
    REC_KEY,
    RecordedRequest,
    bad_request,
    error_response,
    json_object,
    not_found,
)
from .platform import PLATFORM, Platform
from .spec_validation import SpecViolation, published_spec, validation_errors

log = logging.getLogger(__name__)

DIALOGS_PATH = "/calls/1/dialogs"
#: Reference: dialog creation is throttled at 20 requests/s (when emulation is on).
DIALOG_RATE_PER_S = 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record, authenticate, apply faults and the throttle, then handle."""
    sim = request.app[PLATFORM]
    at = time.time()
    raw = await request.read()
    parsed = None
    if raw:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            request[JSON_ERROR_KEY] = str(exc)
    request[JSON_KEY] = parsed
    rec = RecordedRequest(request.method, request.path, dict(request.headers), parsed, at,
                          query=dict(request.query))
    request[REC_KEY] = rec
    sim.requests.append(rec)
    if request.method == "POST" and request.path == DIALOGS_PATH:
        sim.dialog_requests.append(rec)
    response = await _answer(request, handler, rec)
    _check_answer(request, response)
    rec.status = response.status
    rec.answered_at = time.time()
    log.info("%s %s -> %d%s", request.method, request.path, response.status,
             " (fault)" if rec.faulted else "")
    return response


async def _answer(request: web.Request, handler: Handler,
                  rec: RecordedRequest) -> web.StreamResponse:
    sim = request.app[PLATFORM]
    auth = request.headers.get("Authorization", "")
    if auth != f"App {sim.api_key}":
        text = "missing Authorization header" if not auth else "invalid API key or scheme"
        return error_response(401, "UNAUTHORIZED", text)
    client = auth
    rec.early = sim.faults.check_arrival(client, request.method, request.path, rec.at)
    decision = sim.faults.decide(request.path)
    throttled = sim.throttled(request.method, request.path, rec.at)
    rec.faulted = decision.faulted or throttled
    if decision.delay_s > 0:
        # A slow server: the request is processed after the delay even if the client gave
        # up meanwhile (aiohttp does not cancel handlers on disconnect by default).
        await asyncio.sleep(decision.delay_s)
    status, retry_after = decision.status, decision.retry_after
    if status is None and throttled:
        status, retry_after = 429, sim.throttle_retry_after
    if status is None:
        refused = _refuse_invalid(request, rec)
        if refused is not None:
            return refused
    if status is not None:
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
            sim.faults.announce_retry_after(client, request.path, retry_after)
        return web.json_response(fault_body(status), status=status, headers=headers)
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return error_response(404, "NOT_FOUND", f"no such resource {request.path}")
    except web.HTTPMethodNotAllowed:
        return error_response(405, "BAD_REQUEST", f"{request.method} not allowed here")


def _spec_path(request: web.Request) -> str | None:
    """The spec's path template of the matched route (routes use the spec's names)."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    path = resource.canonical if resource is not None else None
    paths = published_spec().document["paths"]
    if path in paths and request.method.lower() in paths[path]:
        return path
    return None


def _refuse_invalid(request: web.Request, rec: RecordedRequest) -> web.Response | None:
    """400 for a request body the published spec rejects (None when it is valid)."""
    path = _spec_path(request)
    if path is None or request.get(JSON_ERROR_KEY):
        return None  # unknown route: 404/405 follow; bad JSON: the handler answers 400
    problems = published_spec().request_problems(request.method, path, request.get(JSON_KEY))
    if not problems:
        return None
    rec.spec_problems = validation_errors(problems)
    request.app[PLATFORM].invalid_requests.append(rec)
    log.warning("%s %s refused by the published spec: %s", request.method, request.path,
                rec.spec_problems)
    return bad_request("request does not match the Calls API specification", rec.spec_problems)


def _check_answer(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer of a documented operation must match the published spec."""
    path = _spec_path(request)
    if path is None or not isinstance(response, web.Response) or response.body is None:
        return
    assert isinstance(response.body, bytes)
    body = orjson.loads(response.body) if response.body else None
    try:
        published_spec().check_response(request.method, path, response.status, body)
    except SpecViolation as exc:
        request.app[PLATFORM].spec_violations.append(str(exc))
        log.error("simulator bug: %s", exc)
        raise


# --- dialogs -----------------------------------------------------------------------------

async def create_dialog(request: web.Request) -> web.Response:
    """The body already passed the spec's DialogRequest (middleware)."""
    sim = request.app[PLATFORM]
    body, error = json_object(request)
    if error is not None:
        return error
    assert body is not None
    parent_call_id: str = body["parentCallId"]
    call = sim.parent_calls.get(parent_call_id)
    if call is None:
        return bad_request("invalid dialog request",
                           {"parentCallId": [f"call {parent_call_id} not found"]})
    if call.parent.ended:
        return bad_request("invalid dialog request",
                           {"parentCallId": [f"call {parent_call_id} is not active"]})
    child_req: dict[str, Any] = body.get("childCallRequest") or {}
    endpoint: dict[str, Any] | None = child_req.get("endpoint")
    if endpoint is None or endpoint["type"] not in ("WEBSOCKET", "PHONE"):
        # Valid for the spec (an endpoint is optional there) but not simulated.
        return bad_request("invalid dialog request", {"childCallRequest.endpoint": [
            "the simulator bridges WEBSOCKET and PHONE endpoints only"]})
    config = None
    if endpoint["type"] == "WEBSOCKET" and sim.refuse_second_media_dialog and any(
            d.child.endpoint.get("type") == "WEBSOCKET" for d in call.dialogs):
        return bad_request("invalid dialog request", {
            "parentCallId": [f"call {parent_call_id} already had a media dialog"]})
    if endpoint["type"] == "WEBSOCKET":
        config_id = endpoint["websocketEndpointConfigId"]
        config = request.app[configs.CONFIGS].get(config_id)
        if config is None:
            return bad_request("invalid dialog request", {
                "childCallRequest.endpoint.websocketEndpointConfigId":
                    [f"media-stream config {config_id} not found"]})
        if not config.is_websocket_endpoint:
            # A MEDIA_STREAMING config forks audio; it cannot be a call's endpoint
            # (inferred from the field's name: the spec states no error for it).
            return bad_request("invalid dialog request", {
                "childCallRequest.endpoint.websocketEndpointConfigId":
                    [f"media-stream config {config_id} is {config.type}, "
                     "not WEBSOCKET_ENDPOINT"]})
        to = config_id
    else:
        to = endpoint["phoneNumber"]
    child = CallState(endpoint=dict(endpoint), from_=child_req.get("from") or call.parent.to,
                      to=to, direction="OUTBOUND", state="CALLING",
                      parent_call_id=call.call_id, custom_data=child_req.get("customData"))
    propagation = body.get("propagationOptions") or {}
    # The spec's default for childCallHangup is true (the parent ends with the child).
    child_call_hangup = bool(propagation.get("childCallHangup", True))
    dialog = DialogState(parent=call.parent, child=child, request=body,
                         child_call_hangup=child_call_hangup,
                         config=config.to_wire() if config else None)
    child.dialog_id = dialog.id
    call.parent.dialog_id = dialog.id
    sim.register_dialog(call, dialog)
    call.add_dialog(dialog, requested_at=request[REC_KEY].at)
    return web.json_response(dialog.to_wire(sim.ident), status=201)


async def get_dialog(request: web.Request) -> web.Response:
    sim = request.app[PLATFORM]
    dialog_id = request.match_info["dialogId"]
    found = sim.dialogs.get(dialog_id)
    if found is None:
        return not_found("dialog", dialog_id)
    return web.json_response(found[1].to_wire(sim.ident))


async def hangup_dialog(request: web.Request) -> web.Response:
    sim = request.app[PLATFORM]
    dialog_id = request.match_info["dialogId"]
    found = sim.dialogs.get(dialog_id)
    if found is None:
        return not_found("dialog", dialog_id)
    call, dialog = found
    if dialog.active and call.dialog is dialog:
        await call.request("api_dialog")
    return web.json_response(dialog.to_wire(sim.ident))


# --- calls -------------------------------------------------------------------------------

async def get_call(request: web.Request) -> web.Response:
    sim = request.app[PLATFORM]
    call_id = request.match_info["callId"]
    found = sim.find_call(call_id)
    if found is None:
        return not_found("call", call_id)
    return web.json_response(found[1].to_wire(sim.ident))


async def answer_call(request: web.Request) -> web.Response:
    sim = request.app[PLATFORM]
    call_id = request.match_info["callId"]
    found = sim.find_call(call_id)
    if found is None:
        return not_found("call", call_id)
    _, error = json_object(request, required=True)
    if error is not None:
        return error
    owner, call = found
    if call is not owner.parent:
        return bad_request("only an inbound call can be answered", {"callId": ["not inbound"]})
    if call.ended:
        return bad_request(f"call {call_id} is {call.state}", {"callId": ["not ringing"]})
    owner.answer()
    return web.json_response({"status": "COMPLETED"})


async def hangup_call(request: web.Request) -> web.Response:
    sim = request.app[PLATFORM]
    call_id = request.match_info["callId"]
    found = sim.find_call(call_id)
    if found is None:
        return not_found("call", call_id)
    _, error = json_object(request, required=False)  # errorCode: checked by the spec
    if error is not None:
        return error
    owner, call = found
    # An already ended call is returned as it is (idempotent for retrying clients).
    if not call.ended and not owner.finished:
        if call is owner.parent:
            await owner.request("api_parent")
        elif owner.dialog is not None and owner.dialog.child is call:
            await owner.request("api_child", call.id)
    return web.json_response(call.to_wire(sim.ident))


def create_app(platform: Platform, media_stream_configs: dict[str, configs.StoredConfig]
               ) -> web.Application:
    """The Calls API app for one simulated platform and its media-stream configs."""
    app = web.Application(middlewares=[guard], client_max_size=2**20)
    app[PLATFORM] = platform
    app[configs.CONFIGS] = media_stream_configs
    app.router.add_post(DIALOGS_PATH, create_dialog)
    # Route parameters carry the spec's names, so a route's template is the spec's path.
    app.router.add_get(DIALOGS_PATH + "/{dialogId}", get_dialog)
    app.router.add_post(DIALOGS_PATH + "/{dialogId}/hangup", hangup_dialog)
    app.router.add_get("/calls/1/calls/{callId}", get_call)
    app.router.add_post("/calls/1/calls/{callId}/answer", answer_call)
    app.router.add_post("/calls/1/calls/{callId}/hangup", hangup_call)
    configs.add_routes(app)
    return app
