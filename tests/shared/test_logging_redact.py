"""Credentials in URLs never reach a log line or an error message: every URL form."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from callbridge.shared.logging_setup import JsonFormatter, TextFormatter, redact

SECRET = "S3cr3t-Pa55w0rd"


@pytest.mark.parametrize(("text", "expected"), [
    (f"redis://user:{SECRET}@redis:6379/0", "redis://user:***@redis:6379/0"),
    (f"redis://:{SECRET}@redis:6379/0", "redis://:***@redis:6379/0"),
    (f"rediss://default:{SECRET}@cache.example.com:6380/1",
     "rediss://default:***@cache.example.com:6380/1"),
    (f"rediss://:{SECRET}@h/0", "rediss://:***@h/0"),
    # A raw `@` inside the password is still part of the password.
    (f"redis://:{SECRET}@x@h:6379", "redis://:***@h:6379"),
    (f"https://{SECRET}@git.example.com/repo", "https://***@git.example.com/repo"),
    ("https://ghp_1a2b3c4d5e6f7a8b9c0d@github.com", "https://***@github.com"),
    (f"redis://h:6379/0?password={SECRET}", "redis://h:6379/0?password=***"),
    (f"redis://h:6379/0?db=1&Password={SECRET}&x=1", "redis://h:6379/0?db=1&Password=***&x=1"),
    (f"https://api.example.com/x?api_key={SECRET}", "https://api.example.com/x?api_key=***"),
    # Azure OpenAI's key-in-query form (`api-key=`, with a hyphen).
    (f"wss://r.openai.azure.com/openai/realtime?deployment=d&api-key={SECRET}",
     "wss://r.openai.azure.com/openai/realtime?deployment=d&api-key=***"),
    (f"connect failed: redis://:{SECRET}@10.0.0.5:6379/0 (refused)",
     "connect failed: redis://:***@10.0.0.5:6379/0 (refused)"),
    # Nothing secret: unchanged.
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("ssh://git@github.com/x", "ssh://git@github.com/x"),
    ("https://example.com/a?b=1#c", "https://example.com/a?b=1#c"),
])
def test_redact_every_url_credential_form(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert SECRET not in redact(text)


@pytest.mark.parametrize("formatter", [JsonFormatter("t"), TextFormatter("t")],
                         ids=["json", "text"])
def test_formatters_redact_message_extras_and_tracebacks(formatter: logging.Formatter) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("test.redact")
    logger.handlers[:] = [handler]
    logger.propagate = False
    url = f"redis://:{SECRET}@redis:6379/0"
    logger.warning("cannot reach %s", url, extra={"redis": url})
    try:
        raise ConnectionError(f"Error connecting to {url}")
    except ConnectionError:
        logger.exception("failed")
    out = stream.getvalue()
    assert SECRET not in out
    assert "redis://:***@redis:6379/0" in out
    if isinstance(formatter, JsonFormatter):
        first = orjson.loads(out.splitlines()[0])
        assert first["redis"] == "redis://:***@redis:6379/0"
