"""Media-stream configs: where the platform opens the media WebSocket, at which rate.

What a config request may hold is decided by Infobip's published spec (the request body is
checked in the API middleware before these handlers run: `type` is required, `sampleRate` is
a string among "8000", "16000", "24000", "32000", default "8000"); these handlers keep the
state. `GET ?page=0&size=20` (size <= 100) -> `{"results", "paging"}`; `GET|PUT|DELETE
.../{mediaStreamConfigId}`, DELETE answering the deleted config (200, as the spec documents).

Both types the spec knows are held: WEBSOCKET_ENDPOINT (what callbridge creates and what a
dialog's WEBSOCKET endpoint names) and MEDIA_STREAMING (the configs an account uses to fork a
call's audio elsewhere; the spec's list example shows one beside a WEBSOCKET_ENDPOINT config
of the same name, so names are not unique across types). A MEDIA_STREAMING config answers
`audioEncoding` (RAW or BASE64) and no `sampleRate`; its `securityConfig` is kept but never
answered (the spec's MediaStreamingConfigResponse has no such field). Only a
WEBSOCKET_ENDPOINT config can carry a dialog's media leg (api.py).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .http_common import bad_request, json_object, not_found

MAX_PAGE_SIZE = 100
CONFIG_PATH = "/calls/1/media-stream-configs"
CONFIG_ITEM_PATH = CONFIG_PATH + "/{mediaStreamConfigId}"
#: the spec's default for a WEBSOCKET_ENDPOINT config without `sampleRate`
DEFAULT_SAMPLE_RATE = "8000"
WEBSOCKET_ENDPOINT = "WEBSOCKET_ENDPOINT"
MEDIA_STREAMING = "MEDIA_STREAMING"
#: the spec's AudioEncoding enum (MediaStreamingConfigResponse.audioEncoding). The request
#: schema does not list the field (only its example does), so the enum is checked here: an
#: answer with any other value would break the response schema.
AUDIO_ENCODINGS = ("RAW", "BASE64")


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
    #: MEDIA_STREAMING only (None: not given, not answered)
    audio_encoding: str | None = None
    security_config: dict[str, Any] | None = None

    @property
    def is_websocket_endpoint(self) -> bool:
        return self.type == WEBSOCKET_ENDPOINT

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"id": self.id, "type": self.type, "name": self.name,
                                "url": self.url}
        if self.is_websocket_endpoint:
            wire["sampleRate"] = self.sample_rate
        elif self.audio_encoding is not None:
            wire["audioEncoding"] = self.audio_encoding
        return wire


#: The platform's media-stream configs by id, as the API app holds them (the simulator
#: passes its own dict to `api.create_app`, so both see one store).
CONFIGS: web.AppKey[dict[str, StoredConfig]] = web.AppKey("media_stream_configs", dict)


def config_from_request(body: dict[str, Any],
                        config_id: str) -> StoredConfig | dict[str, list[str]]:
    """A config from a request body the spec accepted, or validationErrors for what the
    simulator cannot serve (a URL that is not ws:// or wss://, an unknown audioEncoding)."""
    if not str(body["url"]).startswith(("ws://", "wss://")):
        return {"url": ["must be a ws:// or wss:// URL"]}
    if body["type"] == WEBSOCKET_ENDPOINT:
        return StoredConfig(config_id, body["type"], body["name"], body["url"],
                            body.get("sampleRate", DEFAULT_SAMPLE_RATE))
    if body["type"] == MEDIA_STREAMING:
        encoding = body.get("audioEncoding")
        if encoding is not None and encoding not in AUDIO_ENCODINGS:
            return {"audioEncoding": [f"must be one of {', '.join(AUDIO_ENCODINGS)}"]}
        return StoredConfig(config_id, body["type"], body["name"], body["url"],
                            audio_encoding=encoding, security_config=body.get("securityConfig"))
    # The spec's discriminator admits only the two types above; kept as a guard.
    return {"type": [f"{body['type']} configs are not simulated"]}


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
    configs = request.app[CONFIGS]
    result = _config_in(request, new_config_id())
    if isinstance(result, web.Response):
        return result
    configs[result.id] = result
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
    configs = request.app[CONFIGS]
    page = _int_param(request, "page", 0)
    size = _int_param(request, "size", 20)
    problems: dict[str, list[str]] = {}
    if page is None or page < 0:
        problems["page"] = ["must be an integer >= 0"]
    if size is None or not 1 <= size <= MAX_PAGE_SIZE:
        problems["size"] = [f"must be an integer between 1 and {MAX_PAGE_SIZE}"]
    if problems or page is None or size is None:
        return bad_request("invalid paging parameters", problems)
    items = list(configs.values())
    total = len(items)
    body = {"results": [c.to_wire() for c in items[page * size: (page + 1) * size]],
            "paging": {"page": page, "size": size, "totalPages": math.ceil(total / size),
                       "totalResults": total}}
    return web.json_response(body)


async def get_config(request: web.Request) -> web.Response:
    config_id = request.match_info["mediaStreamConfigId"]
    config = request.app[CONFIGS].get(config_id)
    if config is None:
        return not_found("media-stream config", config_id)
    return web.json_response(config.to_wire())


async def update_config(request: web.Request) -> web.Response:
    configs = request.app[CONFIGS]
    config_id = request.match_info["mediaStreamConfigId"]
    if config_id not in configs:
        return not_found("media-stream config", config_id)
    result = _config_in(request, config_id)
    if isinstance(result, web.Response):
        return result
    configs[config_id] = result
    return web.json_response(result.to_wire())


async def delete_config(request: web.Request) -> web.Response:
    config_id = request.match_info["mediaStreamConfigId"]
    config = request.app[CONFIGS].pop(config_id, None)
    if config is None:
        return not_found("media-stream config", config_id)
    return web.json_response(config.to_wire())


def add_routes(app: web.Application) -> None:
    app.router.add_post(CONFIG_PATH, create_config)
    app.router.add_get(CONFIG_PATH, list_configs)
    app.router.add_get(CONFIG_ITEM_PATH, get_config)
    app.router.add_put(CONFIG_ITEM_PATH, update_config)
    app.router.add_delete(CONFIG_ITEM_PATH, delete_config)
