"""Cut Infobip's published Voice OpenAPI document down to what the simulator serves.

Usage: python -m callbridge.simulators.infobip.spec.reduce_spec <infobip-voice-openapi.json>
[out.json]

Keeps `openapi` and `info` as published, the operations in `SERVED` (paths and the call
event webhook), and every component they reach: `$ref`s and OpenAPI discriminator mappings
(whose targets are plain strings, not `$ref`s), transitively. Nothing is edited: each kept
object is byte-for-byte the published one, so the reduced file validates exactly as the
original would. See README.md beside this file for where the original comes from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: path -> methods the Infobip simulator implements (simulators/infobip/api.py, configs.py)
SERVED: dict[str, tuple[str, ...]] = {
    "/calls/1/dialogs": ("post",),
    "/calls/1/dialogs/{dialogId}": ("get",),
    "/calls/1/dialogs/{dialogId}/hangup": ("post",),
    "/calls/1/calls/{callId}": ("get",),
    "/calls/1/calls/{callId}/answer": ("post",),
    "/calls/1/calls/{callId}/hangup": ("post",),
    "/calls/1/media-stream-configs": ("get", "post"),
    "/calls/1/media-stream-configs/{mediaStreamConfigId}": ("get", "put", "delete"),
}
#: webhooks (OpenAPI 3.1 `webhooks`) the simulator posts
WEBHOOKS = ("calls-event-webhook",)
#: every ApiException body must validate even for statuses an operation does not list
#: (a simulated 503): the generic error schema the 4xx/5xx responses share
EXTRA_REFS = ("#/components/schemas/ApiException",)


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value)
            elif key == "discriminator" and isinstance(value, dict):
                found.update(v for v in value.get("mapping", {}).values() if isinstance(v, str))
            else:
                _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def _lookup(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def reduce(doc: dict[str, Any]) -> dict[str, Any]:
    paths = {path: {m: doc["paths"][path][m] for m in methods}
             for path, methods in SERVED.items()}
    webhooks = {name: doc["webhooks"][name] for name in WEBHOOKS}
    todo: set[str] = set(EXTRA_REFS)
    _refs(paths, todo)
    _refs(webhooks, todo)
    seen: set[str] = set()
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        if not ref.startswith("#/components/"):
            raise ValueError(f"external reference {ref!r} is not supported")
        seen.add(ref)
        _refs(_lookup(doc, ref), todo)
    components: dict[str, dict[str, Any]] = {}
    for ref in sorted(seen):
        _, _, section, name = ref.split("/", 3)
        components.setdefault(section, {})[name] = _lookup(doc, ref)
    return {"openapi": doc["openapi"], "info": doc["info"], "paths": paths,
            "webhooks": webhooks, "components": components}


def main(argv: list[str]) -> int:
    if not 2 <= len(argv) <= 3:
        print(__doc__)
        return 2
    source = Path(argv[1])
    target = Path(argv[2]) if len(argv) == 3 else Path(__file__).with_name(
        "infobip-voice-openapi.reduced.json")
    reduced = reduce(json.loads(source.read_text()))
    target.write_text(json.dumps(reduced, indent=1, sort_keys=False) + "\n")
    print(f"{target}: {len(reduced['paths'])} paths, "
          f"{sum(len(v) for v in reduced['components'].values())} components, "
          f"{target.stat().st_size} bytes (from {source.stat().st_size})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
