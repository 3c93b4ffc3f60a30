"""Realtime events judged by the official `openai` package's types, not by callbridge's code.

A simulator is a witness: what it accepts from the gateway, and what it sends back, is
decided here by the pydantic models OpenAI publishes in `openai.types.realtime`
(https://github.com/openai/openai-python/tree/main/src/openai/types/realtime):
`RealtimeClientEvent` for client events, `RealtimeServerEvent` for server events. Nothing in
`shared/` is consulted, so a mistake in `callbridge.shared.realtime_events` cannot pass on
both sides.

The SDK's models allow extra keys (`extra="allow"`, so a newer server does not break an
older client). The live server does the opposite for client events: an unknown key is
`unknown_parameter` with `param` = its path (docs/protocol-assumptions.md cites the sources),
so after pydantic validation every model in the parsed tree is checked for extra keys here.
The same check on server events keeps the simulator from sending fields the SDK does not
know (a simulator bug, raised as `SimulatorBug`).
"""

from __future__ import annotations

import re
import typing
from typing import Any

from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import BaseModel, ValidationError

from callbridge.simulators.openai_realtime.wire import (
    ClientError,
    invalid_type,
    invalid_value,
    kind_of,
    missing,
    unknown,
)

__all__ = ["CLIENT_EVENT_TYPES", "SERVER_EVENT_TYPES", "SimulatorBug", "check_server_event",
           "validate_client_event"]


class SimulatorBug(AssertionError):
    """The simulator built a server event the SDK's types reject: fix the simulator."""


def _by_type(union: Any) -> dict[str, type[BaseModel]]:
    """{event type: model} from an `Annotated[Union[...], PropertyInfo(discriminator=...)]`.

    The SDK's discriminator annotation is its own (`PropertyInfo`), which pydantic does not
    read, so the dispatch on `type` is done here rather than by a TypeAdapter's smart mode
    (which, with extra keys allowed, could settle on the wrong member)."""
    members = typing.get_args(typing.get_args(union)[0])
    out: dict[str, type[BaseModel]] = {}
    for model in members:
        for literal in typing.get_args(model.model_fields["type"].annotation):
            out[literal] = model
    return out


_CLIENT_MODELS = _by_type(RealtimeClientEvent)
_SERVER_MODELS = _by_type(RealtimeServerEvent)
CLIENT_EVENT_TYPES: tuple[str, ...] = tuple(_CLIENT_MODELS)
SERVER_EVENT_TYPES: tuple[str, ...] = tuple(_SERVER_MODELS)

#: Server-event keys the live service sends that the SDK's models do not declare (list
#: indices written `[]`). Each one needs a source: docs/protocol-assumptions.md
#: reports live `session.created`/`session.updated` carrying the session's `id`, `object`
#: and `expires_at`. Anything else unknown to the SDK is a simulator bug.
LIVE_SERVER_EXTRAS = frozenset({"session.id", "session.object", "session.expires_at"})

_INDEX = re.compile(r"\[\d+\]")


def _generic(path: str) -> str:
    return _INDEX.sub("[]", path)


_TYPE_ERRORS = {
    "string_type": "a string", "int_type": "an integer", "int_parsing": "an integer",
    "float_type": "a decimal", "float_parsing": "a decimal", "bool_type": "a boolean",
    "bool_parsing": "a boolean", "dict_type": "an object", "model_type": "an object",
    "model_attributes_type": "an object", "list_type": "an array",
}


def _data_path(data: Any, loc: tuple[int | str, ...], error_type: str) -> tuple[str, Any]:
    """The JSON path of a pydantic error and the offending value.

    Pydantic's `loc` mixes JSON keys with the names of union members it tried
    (`RealtimeSessionCreateRequest`, `str`, `literal[...]`); only the parts that exist in
    the data are kept, so the path is what the live server reports in `param`."""
    path = ""
    current = data
    for part in loc:
        if isinstance(current, dict) and isinstance(part, str) and part in current:
            path = f"{path}.{part}" if path else part
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            path = f"{path}[{part}]"
            current = current[part]
    if error_type == "missing" and loc and isinstance(loc[-1], str):
        path = f"{path}.{loc[-1]}" if path else loc[-1]
        current = None
    return path, current


def _client_error(data: dict[str, Any], exc: ValidationError) -> ClientError:
    """The live server's error for the first problem pydantic found."""
    # A union reports one error per member it tried. The member the data was meant for got
    # furthest into it, so the deepest error wins; among equals, a mismatched `type`
    # discriminator (another member's tag) is the least telling.
    candidates = []
    for err in exc.errors():
        path, value = _data_path(data, tuple(err["loc"]), err["type"])
        depth = path.count(".") + path.count("[")
        tag_mismatch = err["type"] == "literal_error" and err["loc"][-1] == "type"
        candidates.append((depth, not tag_mismatch, path, value, err))
    _, _, path, value, first = max(candidates, key=lambda c: (c[0], c[1]))
    if first["type"] == "missing":
        return missing(path)
    expected = _TYPE_ERRORS.get(first["type"])
    if expected is not None:
        return invalid_type(path, expected, value)
    supported = None
    ctx = first.get("ctx") or {}
    if first["type"] == "literal_error" and "expected" in ctx:
        supported = [part.strip().strip("'") for part in
                     str(ctx["expected"]).replace(" or ", ", ").split(",")]
    return invalid_value(path, value if kind_of(value) != "an unsupported value" else str(value),
                         supported)


def _extra_paths(model: BaseModel, path: str = "") -> list[str]:
    """The paths of every key no SDK model declares, depth first (list indices as `[i]`)."""
    found = [f"{path}.{key}" if path else key for key in (model.__pydantic_extra__ or {})]
    for name, field in type(model).model_fields.items():
        key = field.alias or name
        found += _extras_in(getattr(model, name), f"{path}.{key}" if path else key)
    return found


def _extras_in(value: Any, path: str) -> list[str]:
    if isinstance(value, BaseModel):
        return _extra_paths(value, path)
    found: list[str] = []
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found += _extras_in(item, f"{path}[{i}]")
    return found


def validate_client_event(data: dict[str, Any]) -> BaseModel:
    """The SDK model of one client event, or the live server's ClientError for it."""
    if "type" not in data:
        raise missing("type")
    type_ = data["type"]
    model = _CLIENT_MODELS.get(type_) if isinstance(type_, str) else None
    if model is None:
        raise invalid_value("type", type_, list(CLIENT_EVENT_TYPES))
    try:
        # strict: the live server does not turn "0.5" into 0.5 (types as in JSON Schema)
        parsed = model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise _client_error(data, exc) from None
    extras = _extra_paths(parsed)
    if extras:
        raise unknown(extras[0])
    return parsed


def check_server_event(data: dict[str, Any]) -> None:
    """Raise SimulatorBug unless the event is a valid SDK server event with no unknown key."""
    type_ = data.get("type")
    model = _SERVER_MODELS.get(type_) if isinstance(type_, str) else None
    if model is None:
        raise SimulatorBug(f"the SDK has no server event type {type_!r}")
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise SimulatorBug(f"server event {type_} fails the SDK's {model.__name__}: "
                           f"{exc}") from None
    extras = [p for p in _extra_paths(parsed) if _generic(p) not in LIVE_SERVER_EXTRAS]
    if extras:
        raise SimulatorBug(f"server event {type_} has {extras}, unknown to the SDK's "
                           f"{model.__name__}")
