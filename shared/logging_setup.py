"""Process-wide logging: one JSON object a line, `call_id` on every line of a call.

`call_id_var` is a contextvar: set it once at the start of a call's task and every log line
from that task (and tasks it spawns) carries it. Secrets are `SecretStr` in settings and are
never formatted into messages; `redact` is a last guard for URLs with credentials.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from contextvars import ContextVar

import orjson

call_id_var: ContextVar[str | None] = ContextVar("call_id", default=None)

_URL_CREDENTIALS = re.compile(r"(\w+://)([^:/@\s]+):([^@/\s]+)@")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def redact(text: str) -> str:
    """Hide `user:password@` in URLs (e.g. redis://:secret@host)."""
    return _URL_CREDENTIALS.sub(r"\1\2:***@", text)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        call_id = getattr(record, "call_id", None) or call_id_var.get()
        if call_id:
            entry["call_id"] = call_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s " + service + " %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        call_id = getattr(record, "call_id", None) or call_id_var.get()
        return redact(f"{text} [call_id={call_id}]" if call_id else text)


def setup_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter at INFO (every arq poll, every websockets handshake) drowns call logs.
    for noisy in ("websockets", "aiohttp.access", "arq.worker"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
