"""Media-stream configs: where the platform opens the media WebSocket, at which rate.

Source: ../shared/reference/infobip-calls.md, REST: `POST /calls/1/media-stream-configs`
-> 201 `{"type": "WEBSOCKET_ENDPOINT", "name", "url", "sampleRate"}`; `sampleRate` is a
STRING among "8000", "16000", "24000", "32000" (default "8000") and comes back a string;
`GET ?page=0&size=20` (size <= 100) -> `{"results", "paging"}`; `GET|PUT|DELETE .../{id}`.
What DELETE answers is not in the reference: the simulator returns the deleted config (200).
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from shared.infobip_calls import MediaStreamConfig, MediaStreamConfigPage, Paging

from .http_common import SIM, bad_request, json_object, not_found, validation_errors

MAX_PAGE_SIZE = 100


def new_config_id() -> str:
    """Infobip-style 24 hex character id."""
    return uuid.uuid4().hex[:24]


def validate_config(body: dict[str, Any]) -> MediaStreamConfig | dict[str, list[str]]:
    """A valid config (its id not taken from the body) or validationErrors."""
    data = {k: v for k, v in body.items() if k != "id"}
    try:
        config = MediaStreamConfig.model_validate(data)
    except ValidationError as exc:
        return validation_errors(exc)
    if not config.url.startswith(("ws://", "wss://")):
        return {"url": ["must be a ws:// or wss:// URL"]}
    return config


def _config_in(request: web.Request) -> MediaStreamConfig | web.Response:
    """The request body as a valid config, or the 400 to answer (create and update alike)."""
    body, error = json_object(request)
    if error is not None:
        return error
    assert body is not None
    result = validate_config(body)
    if isinstance(result, dict):
        return bad_request("invalid media-stream config", result)
    return result


async def create_config(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    result = _config_in(request)
    if isinstance(result, web.Response):
        return result
    result.id = new_config_id()
    sim.media_stream_configs[result.id] = result
    return web.json_response(result.to_wire(), status=201)


def _int_param(request: web.Request, name: str, default: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        return None


async def list_configs(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    page = _int_param(request, "page", 0)
    size = _int_param(request, "size", 20)
    problems: dict[str, list[str]] = {}
    if page is None or page < 0:
        problems["page"] = ["must be an integer >= 0"]
    if size is None or not 1 <= size <= MAX_PAGE_SIZE:
        problems["size"] = [f"must be an integer between 1 and {MAX_PAGE_SIZE}"]
    if problems or page is None or size is None:
        return bad_request("invalid paging parameters", problems)
    items = list(sim.media_stream_configs.values())
    total = len(items)
    body = MediaStreamConfigPage(
        results=items[page * size: (page + 1) * size],
        paging=Paging(page=page, size=size, total_pages=math.ceil(total / size),
                      total_results=total))
    return web.json_response(body.to_wire())


async def get_config(request: web.Request) -> web.Response:
    config_id = request.match_info["config_id"]
    config = request.app[SIM].media_stream_configs.get(config_id)
    if config is None:
        return not_found("media-stream config", config_id)
    return web.json_response(config.to_wire())


async def update_config(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    config_id = request.match_info["config_id"]
    if config_id not in sim.media_stream_configs:
        return not_found("media-stream config", config_id)
    result = _config_in(request)
    if isinstance(result, web.Response):
        return result
    result.id = config_id
    sim.media_stream_configs[config_id] = result
    return web.json_response(result.to_wire())


async def delete_config(request: web.Request) -> web.Response:
    config_id = request.match_info["config_id"]
    config = request.app[SIM].media_stream_configs.pop(config_id, None)
    if config is None:
        return not_found("media-stream config", config_id)
    return web.json_response(config.to_wire())


def add_routes(app: web.Application) -> None:
    base = "/calls/1/media-stream-configs"
    app.router.add_post(base, create_config)
    app.router.add_get(base, list_configs)
    app.router.add_get(base + "/{config_id}", get_config)
    app.router.add_put(base + "/{config_id}", update_config)
    app.router.add_delete(base + "/{config_id}", delete_config)
