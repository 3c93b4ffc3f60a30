"""Server-event construction shared by the simulator's modules (pure, no I/O).

Every server event is a dict whose FIRST key is `type` and second `event_id`: the gateway's
`callbridge.shared.realtime_events.peek_type` relies on `type` being the first "type" in the text,
as it is on the live server (https://platform.openai.com/docs/api-reference/realtime). Ids are cheap
counters with a per-process prefix, shaped like the real ones (`event_…`, `item_…`, `resp_…`). """

from __future__ import annotations

import itertools
import secrets
from typing import Any

import orjson

_PREFIX = secrets.token_hex(3)
_counter = itertools.count(1)


def new_id(kind: str) -> str:
    """`kind_<prefix><n>`: unique within the process, no randomness per call (hot path)."""
    return f"{kind}_{_PREFIX}{next(_counter):010d}"


def event(type_: str, **fields: Any) -> dict[str, Any]:
    """A server event with `type` first and a fresh `event_id` second."""
    out: dict[str, Any] = {"type": type_, "event_id": new_id("event")}
    out.update(fields)
    return out


def dumps(evt: dict[str, Any]) -> str:
    return orjson.dumps(evt).decode()


class ClientError(Exception):
    """A recoverable `invalid_request_error`: becomes an `error` event, the socket stays open.

    Raised by the pure modules (validation) and the session's handlers; the session turns it
    into the documented error shape with the offending client event's `event_id`.
    """

    def __init__(self, code: str, message: str, param: str | None = None,
                 err_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.err_type = err_type


def error_event(code: str, message: str, param: str | None = None,
                client_event_id: str | None = None,
                err_type: str = "invalid_request_error") -> dict[str, Any]:
    """`{"type":"error","event_id",..,"error":{type, code, message, param, event_id}}`.

    Shape from the Realtime API reference (https://platform.openai.com/docs/api-reference/realtime)
    ("Error event"); `error.event_id` is the
    client event that caused it (null for server-initiated errors such as session_expired).
    """
    return event("error", error={"type": err_type, "code": code, "message": message,
                                 "param": param, "event_id": client_event_id})


def missing(path: str) -> ClientError:
    return ClientError("missing_required_parameter", f"Missing required parameter: '{path}'.",
                       path)


def unknown(path: str) -> ClientError:
    return ClientError("unknown_parameter", f"Unknown parameter: '{path}'.", path)


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "an unsupported value"


def invalid_type(path: str, expected: str, value: Any) -> ClientError:
    return ClientError("invalid_type",
                       f"Invalid type for '{path}': expected {expected}, but got "
                       f"{kind_of(value)} instead.", path)


def invalid_value(path: str, value: Any, supported: list[Any] | None = None) -> ClientError:
    shown = f"'{value}'" if isinstance(value, str) else str(value)
    msg = f"Invalid value: {shown}."
    if supported:
        names = [f"'{s}'" if isinstance(s, str) else str(s) for s in supported]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + f", and {names[-1]}"
        msg += f" Supported values are: {listed}."
    return ClientError("invalid_value", msg, path)
