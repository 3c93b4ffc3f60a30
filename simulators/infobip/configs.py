"""Media-stream configs: where the platform opens the media WebSocket, at which rate.

What a config request may hold is decided by Infobip's published spec (the request body is
checked in the API middleware before these handlers run: `type` is required, `sampleRate` is
a string among "8000", "16000", "24000", "32000", default "8000"); these handlers keep the
state. `GET ?page=0&size=20` (size <= 100) -> `{"results", "paging"}`; `GET|PUT|DELETE
.../{mediaStreamConfigId}`, DELETE answering the deleted config (200, as the spec documents).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .http_common import SIM, bad_request, json_object, not_found

MAX_PAGE_SIZE = 100
CONFIG_PATH = "/calls/1/media-stream-configs"
CONFIG_ITEM_PATH = CONFIG_PATH + "/{mediaStreamConfigId}"
#: the spec's default for a WEBSOCKET_ENDPOINT config without `sampleRate`
DEFAULT_SAMPLE_RATE = "8000"


def new_config_id() -> str:
    """Infobip-style 24 hex character id."""
    return uuid.uuid4().hex[:24]


@dataclass
class StoredConfig:
    """A media-stream config as the platform keeps it (plain values, wire names on output)."""

    id: str
    type: str
    name: str
    url: str
    sample_rate: str = DEFAULT_SAMPLE_RATE

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "name": self.name, "url": self.url,
                "sampleRate": self.sample_rate}


def config_from_request(body: dict[str, Any],
                        config_id: str) -> StoredConfig | dict[str, list[str]]:
    """A config from a request body the spec accepted, or validationErrors for what the
    simulator cannot serve (only WEBSOCKET_ENDPOINT configs, with a ws:// or wss:// URL)."""
    if body["type"] != "WEBSOCKET_ENDPOINT":
        return {"type": [f"{body['type']} configs are not simulated"]}
    if not str(body["url"]).startswith(("ws://", "wss://")):
        return {"url": ["must be a ws:// or wss:// URL"]}
    return StoredConfig(config_id, body["type"], body["name"], body["url"],
                        body.get("sampleRate", DEFAULT_SAMPLE_RATE))


def _config_in(request: web.Request, config_id: str) -> StoredConfig | web.Response:
    """The request body as a config, or the 400 to answer (create and update alike)."""
    body, error = json_object(request)
    if error is not None:
        return error
    assert body is not None
    result = config_from_request(body, config_id)
    if isinstance(result, dict):
        return bad_request("invalid media-stream config", result)
    return result


async def create_config(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    result = _config_in(request, new_config_id())
    if isinstance(result, web.Response):
        return result
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
    body = {"results": [c.to_wire() for c in items[page * size: (page + 1) * size]],
            "paging": {"page": page, "size": size, "totalPages": math.ceil(total / size),
                       "totalResults": total}}
    return web.json_response(body)


async def get_config(request: web.Request) -> web.Response:
    config_id = request.match_info["mediaStreamConfigId"]
    config = request.app[SIM].media_stream_configs.get(config_id)
    if config is None:
        return not_found("media-stream config", config_id)
    return web.json_response(config.to_wire())


async def update_config(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    config_id = request.match_info["mediaStreamConfigId"]
    if config_id not in sim.media_stream_configs:
        return not_found("media-stream config", config_id)
    result = _config_in(request, config_id)
    if isinstance(result, web.Response):
        return result
    sim.media_stream_configs[config_id] = result
    return web.json_response(result.to_wire())


async def delete_config(request: web.Request) -> web.Response:
    config_id = request.match_info["mediaStreamConfigId"]
    config = request.app[SIM].media_stream_configs.pop(config_id, None)
    if config is None:
        return not_found("media-stream config", config_id)
    return web.json_response(config.to_wire())


def add_routes(app: web.Application) -> None:
    app.router.add_post(CONFIG_PATH, create_config)
    app.router.add_get(CONFIG_PATH, list_configs)
    app.router.add_get(CONFIG_ITEM_PATH, get_config)
    app.router.add_put(CONFIG_ITEM_PATH, update_config)
    app.router.add_delete(CONFIG_ITEM_PATH, delete_config)
