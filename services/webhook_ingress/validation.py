"""What the ingress accepts: content type, a bounded body, and the Infobip webhook envelope.

Pure functions (plus one bounded body reader): each problem comes back as a `Problem` with
the HTTP status, a machine code and a detail that tells the sender what to fix. The envelope
model is `callbridge.shared.infobip_events.CallsEvent`, which keeps unknown fields and event types,
so an event Infobip adds tomorrow is accepted and stored (forward compatible). """

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import StreamReader
from pydantic import ValidationError

from callbridge.shared.infobip_events import CallsEvent, EventType

#: The event types callbridge acts on get the larger size bound; any other type is stored
#: but gets the small one (an unknown type is the cheapest way to fill the stream).
KNOWN_EVENT_TYPES = frozenset(t.value for t in EventType)


@dataclass(frozen=True, slots=True)
class Problem:
    status: int
    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class Accepted:
    type: str
    call_id: str  # "" when the event concerns no call


def check_content_type(content_type: str, content_encoding: str | None) -> Problem | None:
    """JSON only (`application/json`, or a `+json` type), and no content coding: the stream
    keeps the body exactly as received, and a gzip body would defeat the size bound."""
    if content_encoding and content_encoding.strip().lower() != "identity":
        return Problem(415, "unsupported_encoding",
                       f"Content-Encoding {content_encoding!r} is not accepted; send the "
                       "JSON body uncompressed")
    if content_type != "application/json" and not (
        content_type.startswith("application/") and content_type.endswith("+json")
    ):
        return Problem(415, "unsupported_media_type",
                       f"Content-Type must be application/json (got {content_type or 'none'!r})")
    return None


def too_large(limit: int) -> Problem:
    return Problem(413, "body_too_large",
                   f"the body is larger than {limit} bytes (INGRESS_MAX_BODY_BYTES); "
                   "webhook events are small JSON objects")


class BodyTimeout(Exception):
    """The sender stalled: the body did not arrive within the bound."""


async def read_bounded(content: StreamReader, limit: int, timeout_s: float) -> tuple[bytes, bool]:
    """Read at most `limit` + 1 bytes within `timeout_s`: (body truncated to limit, too_large).

    Never buffers more than the limit, whatever Content-Length claims or chunking delivers,
    and a slowloris sender is cut off after `timeout_s` (raises BodyTimeout)."""
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while size <= limit:
                chunk = await content.readany()
                if not chunk:
                    break
                parts.append(chunk)
                size += len(chunk)
    except TimeoutError:
        raise BodyTimeout from None
    body = parts[0] if len(parts) == 1 else b"".join(parts)
    if size > limit:
        return body[:limit], True
    return body, False


def event_too_large(event_type: str, size: int, limit: int) -> Problem:
    return Problem(413, "event_too_large",
                   f"a {event_type[:64]!r} event of {size} bytes is larger than the "
                   f"{limit} bytes allowed for its type (INGRESS_EVENT_MAX_BYTES for call "
                   "events, INGRESS_UNKNOWN_EVENT_MAX_BYTES for others, "
                   "INGRESS_EVENT_TYPE_MAX_BYTES per type)")


def parse_event(body: bytes) -> Accepted | Problem:
    """Validate the envelope (pydantic-core parses the JSON straight from bytes: fast)."""
    try:
        event = CallsEvent.model_validate_json(body)
    except ValidationError as exc:
        return _describe(exc)
    return Accepted(type=event.type, call_id=event.subject_call_id() or "")


def _describe(exc: ValidationError) -> Problem:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0] if errors else {"type": "", "loc": (), "msg": str(exc)}
    if first["type"] == "json_invalid":
        return Problem(400, "invalid_json",
                       f"the body is not valid JSON ({first['msg']}); send one JSON object "
                       "encoded as UTF-8")
    if first["type"] == "model_type" and not first["loc"]:
        return Problem(400, "invalid_event",
                       "the body must be a JSON object (an Infobip Calls webhook event)")
    shown = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(body)'}: {err['msg']}" for err in errors[:3]
    )
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return Problem(400, "invalid_event",
                   f"not an Infobip Calls event: {shown}{more}; an event needs a non-empty "
                   "string 'type' and well-formed known fields")
