"""`callbridge setup`: find or create the media-stream config for the gateway's public URL.

Idempotent by name: an existing config with that name is reused (and reported if its URL or
rate differ, updated only with --update). Source: ../shared/reference/infobip-calls.md
(`/calls/1/media-stream-configs`, sampleRate is a string, list with page/size <= 100).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from shared.infobip_calls import MediaStreamConfig, parse_error_body

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


async def find_or_create(base_url: str, api_key: str, name: str, url: str, sample_rate: int,
                         dry_run: bool, update: bool,
                         log: Any = print) -> str | None:
    base = base_url.rstrip("/") + "/calls/1/media-stream-configs"
    wanted = MediaStreamConfig(name=name, url=url, sample_rate=str(sample_rate))
    headers = {"Authorization": f"App {api_key}", "Content-Type": "application/json"}
    if dry_run:
        log(f"would GET {base}?page=0&size=100 (all pages) to find a config named {name!r}")
        log(f"would POST {base} {wanted.to_wire()} if none exists")
        return None
    async with aiohttp.ClientSession(headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=15)) as http:
        page, existing = 0, None
        while existing is None:
            data = await _call(http, PlannedRequest("GET", f"{base}?page={page}&size=100", None))
            for item in data.get("results", []):
                if item.get("name") == name:
                    existing = MediaStreamConfig.model_validate(item)
                    break
            paging = data.get("paging", {})
            page += 1
            if page >= int(paging.get("totalPages", 1)):
                break
        if existing is None:
            created = await _call(http, PlannedRequest("POST", base, wanted.to_wire()))
            log(f"created media-stream config {created['id']} -> {url}")
            return str(created["id"])
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
