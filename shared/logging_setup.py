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

#: scheme://userinfo@ — userinfo greedy up to the authority's last `@` (a password with a raw
#: `@` in it is still one password), never past `/`, `?`, `#` or whitespace.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#]*)@")
#: `password=...` and its relatives in query strings (redis-py reads `?password=`).
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&;](?:password|passwd|pwd|pass|token|access_token|secret|api[-_]?key|apikey"
    r"|key|auth|sig|signature)=)(?P<value>[^&#\s]+)", re.IGNORECASE)
#: A user name alone that looks like a credential (a token used as the user, as in
#: https://<token>@host): long, or letters and digits mixed.
_TOKEN_LIKE = re.compile(r"^(?=.*\d)(?=.*[A-Za-z]).{8,}$|^.{16,}$")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _redact_userinfo(match: re.Match[str]) -> str:
    userinfo = match["userinfo"]
    user, colon, _password = userinfo.partition(":")
    if colon:
        return f"{match['scheme']}{user}:***@"
    return f"{match['scheme']}{'***' if _TOKEN_LIKE.match(user) else user}@"


def redact(text: str) -> str:
    """Hide credentials in URLs: `user:password@` and `:password@` (redis://, rediss://,
    https://...), a token used as the user name, and `password=` (and relatives) in query
    strings. The user name stays when it is a plain name: it helps and is not secret."""
    return _QUERY_SECRET.sub(r"\g<name>***", _URL_USERINFO.sub(_redact_userinfo, text))


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
                # Extra fields are a way around the message's redaction: guard them too.
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
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
