"""`callbridge setup`: find or create the media-stream config for the gateway's public URL.

Idempotent by name: an existing config with that name is reused (and reported if its URL or
rate differ, updated only with --update). Source: the Calls API reference at
https://www.infobip.com/docs/api (`/calls/1/media-stream-configs`: `sampleRate` is a string,
the list is paged with page/size <= 100); what callbridge assumes beyond it is in
docs/protocol-assumptions.md.

Only a `WEBSOCKET_ENDPOINT` config can be ours: it is what a dialog's WEBSOCKET endpoint
names. The same list holds configs of other types (the spec's response type enum has
`MEDIA_STREAMING`, for forking a call's audio, and its own list example shows one sharing a
name with a `WEBSOCKET_ENDPOINT` config), so names are not unique across types. A same-named
config of another type is reported and left alone; when no usable `WEBSOCKET_ENDPOINT`
config has the name, ours is created beside it (saying so), because reusing or rewriting
someone else's config would break whatever uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pydantic import ValidationError

from callbridge.shared.infobip_calls import MediaStreamConfig, parse_error_body

WEBHOOK_EVENTS = ("CALL_RECEIVED", "CALL_ESTABLISHED", "CALL_FINISHED", "CALL_FAILED",
                  "DIALOG_CREATED", "DIALOG_ESTABLISHED", "DIALOG_FAILED", "DIALOG_FINISHED")


class SetupError(RuntimeError):
    pass


@dataclass
class PlannedRequest:
    method: str
    url: str
    body: dict[str, Any] | None


async def _call(http: aiohttp.ClientSession, req: PlannedRequest) -> Any:
    async with http.request(req.method, req.url, json=req.body) as resp:
        data = await resp.json(content_type=None)
        if resp.status >= 400:
            message_id, text = parse_error_body(data)
            hint = " (check INFOBIP_API_KEY and its calls:manage scope)" if resp.status in (
                401, 403) else ""
            raise SetupError(f"{req.method} {req.url} -> {resp.status} {message_id}: {text}{hint}")
        return data


@dataclass
class NameMatches:
    """What the config list holds under one name."""

    ours: list[MediaStreamConfig] = field(default_factory=list)
    #: (id, type) of same-named configs of another type: not ours, never touched
    foreign: list[tuple[str, str]] = field(default_factory=list)
    #: same-named WEBSOCKET_ENDPOINT items our model could not read: (id, why)
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def sort_item(item: Any, name: str, found: NameMatches, log: Any) -> None:
    """File one list item under `found` if it carries `name`; report what is skipped.

    Nothing in an item is fatal: the list is the account's, and whatever else lives there
    (other types, fields or values our model does not know) must not stop setup."""
    if not isinstance(item, dict):
        log(f"skipped a media-stream config list item that is not an object: {item!r:.80}")
        return
    if item.get("name") != name:
        return
    config_id, kind = str(item.get("id")), str(item.get("type"))
    if kind != "WEBSOCKET_ENDPOINT":
        found.foreign.append((config_id, kind))
        log(f"config {config_id} named {name!r} is of type {kind}, not WEBSOCKET_ENDPOINT: "
            "not ours, left alone")
        return
    try:
        found.ours.append(MediaStreamConfig.model_validate(item))
    except ValidationError as exc:
        why = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        found.unreadable.append((config_id, why))
        log(f"config {config_id} named {name!r} could not be read ({why}): skipped")


async def _list_named(http: aiohttp.ClientSession, base: str, name: str,
                      log: Any) -> NameMatches:
    """Every page of the list, sorted by `sort_item` (all pages: a foreign config on page 0
    must not hide ours on page 1)."""
    found, page = NameMatches(), 0
    while True:
        data = await _call(http, PlannedRequest("GET", f"{base}?page={page}&size=100", None))
        if not isinstance(data, dict) or not isinstance(data.get("results", []), list):
            raise SetupError(f"GET {base} answered something that is not a config page: "
                             f"{data!r:.200}")
        for item in data.get("results", []):
            sort_item(item, name, found, log)
        paging = data.get("paging") or {}
        page += 1
        if page >= int(paging.get("totalPages", 1)):
            return found


async def find_or_create(base_url: str, api_key: str, name: str, url: str, sample_rate: int,
                         dry_run: bool, update: bool,
                         log: Any = print) -> str | None:
    """The id of our WEBSOCKET_ENDPOINT config named `name` (found, or created), or None on
    a dry run. Same-named configs of another type, or ones that cannot be read, are
    reported through `log` and never reused or changed."""
    base = base_url.rstrip("/") + "/calls/1/media-stream-configs"
    wanted = MediaStreamConfig(name=name, url=url, sample_rate=str(sample_rate))
    headers = {"Authorization": f"App {api_key}", "Content-Type": "application/json"}
    if dry_run:
        log(f"would GET {base}?page=0&size=100 (all pages) to find a WEBSOCKET_ENDPOINT "
            f"config named {name!r}")
        log(f"would POST {base} {wanted.to_wire()} if none exists")
        return None
    async with aiohttp.ClientSession(headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=15)) as http:
        found = await _list_named(http, base, name, log)
        if not found.ours:
            created = await _call(http, PlannedRequest("POST", base, wanted.to_wire()))
            beside = [f"{i} ({t})" for i, t in found.foreign] + [
                f"{i} (unreadable)" for i, _ in found.unreadable]
            note = (f", beside same-named config(s) {', '.join(beside)} that are not ours"
                    if beside else "")
            log(f"created media-stream config {created['id']} -> {url}{note}")
            return str(created["id"])
        existing = found.ours[0]
        assert existing.id is not None  # a listed config always has its id
        if len(found.ours) > 1:
            log(f"{len(found.ours)} WEBSOCKET_ENDPOINT configs are named {name!r} "
                f"({', '.join(str(c.id) for c in found.ours)}); using the first, {existing.id}")
        if (existing.url, existing.sample_rate) != (url, wanted.sample_rate):
            if not update:
                log(f"config {existing.id} named {name!r} points at {existing.url} "
                    f"({existing.sample_rate} Hz); run with --update to point it at {url}")
                return existing.id
            await _call(http, PlannedRequest("PUT", f"{base}/{existing.id}", wanted.to_wire()))
            log(f"updated media-stream config {existing.id} -> {url}")
        else:
            log(f"found media-stream config {existing.id} named {name!r} -> {url}")
        return existing.id
