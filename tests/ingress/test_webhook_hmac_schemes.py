"""The pluggable webhook HMAC scheme (WEBHOOK_HMAC_*, shared/webhook_signing.py) against the
Infobip simulator's own, independent signer (simulators/infobip/webhooks.py).

Infobip publishes no HMAC header format (docs/protocol-assumptions.md, "Webhook HMAC header
format"), so what matters is that each scheme an operator can configure verifies exactly what
a sender following that scheme sends, and nothing else. The sender here is the simulator's
`WebhookPoster`, which does not share code with the verifier: a wrong template, encoding or
prefix on either side makes these tests fail instead of agreeing with itself.
"""

from __future__ import annotations

import ast
import logging
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from callbridge.services.webhook_ingress.config import IngressSettings
from callbridge.shared import redis_keys
from callbridge.shared.settings import load_settings
from callbridge.shared.webhook_signing import HmacScheme, parse_timestamp, sign_headers, verify
from callbridge.simulators.infobip.webhooks import WebhookHmacScheme, WebhookPoster, sign_webhook
from tests.ingress.fixtures import JSON, event, ingress_client, make_settings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "hmac-Scheme-Secret-40417"

# (simulator's scheme, the ingress settings an operator would write for it)
ACCEPTED = [
    pytest.param(WebhookHmacScheme(), {}, id="defaults-on-both-sides"),
    pytest.param(
        WebhookHmacScheme(header="X-Sig", timestamp_header=None, template="{body}",
                          encoding="base64", prefix=""),
        {"webhook_hmac_signature_header": "X-Sig", "webhook_hmac_timestamp_header": "",
         "webhook_hmac_encoding": "base64", "webhook_hmac_signature_prefix": ""},
        id="base64-body-only-no-timestamp"),
    pytest.param(
        WebhookHmacScheme(header="X-Hub-Signature-256", timestamp_header=None,
                          template="{body}"),
        {"webhook_hmac_signature_header": "x-hub-signature-256",
         "webhook_hmac_timestamp_header": "none", "webhook_hmac_signed_template": "{body}"},
        id="hex-prefixed-body-only"),
    pytest.param(
        WebhookHmacScheme(header="X-Signature", timestamp_header="X-Timestamp",
                          template="{timestamp}:{body}", encoding="base64", prefix="v1=",
                          algorithm="sha512"),
        {"webhook_hmac_signature_header": "X-Signature",
         "webhook_hmac_timestamp_header": "X-Timestamp",
         "webhook_hmac_signed_template": "{timestamp}:{body}",
         "webhook_hmac_encoding": "BASE64", "webhook_hmac_signature_prefix": "v1=",
         "webhook_hmac_algorithm": "HMAC_SHA_512"},
        id="base64-prefixed-timestamp-colon-sha512"),
    pytest.param(
        WebhookHmacScheme(header="X-Signature", timestamp_header="X-Request-Time",
                          template="{timestamp}{body}", prefix="", milliseconds=True),
        {"webhook_hmac_signature_header": "X-Signature",
         "webhook_hmac_timestamp_header": "X-Request-Time",
         "webhook_hmac_signed_template": "{timestamp}{body}",
         "webhook_hmac_signature_prefix": ""},
        id="hex-unprefixed-timestamp-ms-no-separator"),
    pytest.param(
        WebhookHmacScheme(algorithm="sha1", prefix="sha1="),
        {"webhook_hmac_algorithm": "sha1", "webhook_hmac_signature_prefix": "sha1="},
        id="sha1-named-explicitly"),
]

# (simulator's scheme, ingress settings) that disagree in exactly one respect
REFUSED = [
    pytest.param(WebhookHmacScheme(encoding="base64"), {}, id="base64-sent-hex-expected"),
    pytest.param(WebhookHmacScheme(), {"webhook_hmac_encoding": "base64"},
                 id="hex-sent-base64-expected"),
    pytest.param(WebhookHmacScheme(prefix=""), {}, id="prefix-missing"),
    pytest.param(WebhookHmacScheme(prefix="sha512="), {}, id="wrong-prefix"),
    pytest.param(WebhookHmacScheme(), {"webhook_hmac_signature_prefix": ""},
                 id="unexpected-prefix"),
    pytest.param(WebhookHmacScheme(template="{timestamp}:{body}"), {}, id="wrong-separator"),
    pytest.param(WebhookHmacScheme(template="{body}"), {}, id="timestamp-not-signed"),
    pytest.param(WebhookHmacScheme(algorithm="sha512"), {}, id="wrong-algorithm"),
    pytest.param(WebhookHmacScheme(header="X-Other-Signature"), {}, id="wrong-header"),
    pytest.param(WebhookHmacScheme(timestamp_header=None, template="{body}"), {},
                 id="timestamp-header-missing"),
]


async def _deliver(redis_url: str, scheme: WebhookHmacScheme, overrides: dict[str, Any],
                   secret: str = SECRET) -> int | None:
    """One event through the simulator's real delivery path to a real ingress."""
    settings = make_settings(redis_url, webhook_hmac_secret=SECRET, **overrides)
    async with ingress_client(settings) as client:
        poster = WebhookPoster(str(client.make_url("/webhook")), hmac_secret=secret.encode(),
                               hmac_scheme=scheme, attempts=1)
        try:
            return await poster.post(orjson.loads(event("c-1")))
        finally:
            await poster.close()


async def _stored(client: aioredis.Redis) -> int:
    return int(await client.xlen(redis_keys.EVENTS_STREAM)
               + await client.xlen(redis_keys.REJECTED_STREAM))


@pytest.mark.parametrize(("scheme", "overrides"), ACCEPTED)
async def test_simulator_signed_webhook_is_accepted(
        redis_url: str, redis_client: aioredis.Redis, scheme: WebhookHmacScheme,
        overrides: dict[str, Any]) -> None:
    assert await _deliver(redis_url, scheme, overrides) == 200
    assert await redis_client.xlen(redis_keys.EVENTS_STREAM) == 1


@pytest.mark.parametrize(("scheme", "overrides"), REFUSED)
async def test_scheme_mismatch_is_refused(
        redis_url: str, redis_client: aioredis.Redis, scheme: WebhookHmacScheme,
        overrides: dict[str, Any]) -> None:
    assert await _deliver(redis_url, scheme, overrides) == 401
    assert await _stored(redis_client) == 0


async def test_wrong_secret_is_refused(redis_url: str, redis_client: aioredis.Redis) -> None:
    assert await _deliver(redis_url, WebhookHmacScheme(), {}, secret="not-" + SECRET) == 401
    assert await _stored(redis_client) == 0


@pytest.mark.parametrize("case", ["fresh", "stale", "future", "tampered"])
async def test_timestamp_window_and_tampering(redis_url: str, redis_client: aioredis.Redis,
                                              case: str) -> None:
    """Signed by the simulator's signer at a chosen time; the 300 s window and the body are
    enforced (`fresh` is the control that the others differ from in one respect only)."""
    settings = make_settings(redis_url, webhook_hmac_secret=SECRET,
                             webhook_hmac_tolerance_s=300)
    body = event("c-1")
    now = time.time()
    signed_at = {"fresh": now, "stale": now - 3600, "future": now + 3600,
                 "tampered": now}[case]
    headers = {**JSON, **sign_webhook(SECRET.encode(), body, WebhookHmacScheme(), signed_at)}
    sent = event("c-2") if case == "tampered" else body
    async with ingress_client(settings) as client:
        resp = await client.post("/webhook", data=sent, headers=headers)
        answer = await resp.json()
    if case == "fresh":
        assert resp.status == 200
        assert await redis_client.xlen(redis_keys.EVENTS_STREAM) == 1
    else:
        assert resp.status == 401 and answer["error"] == "bad_signature"
        assert SECRET not in answer["detail"]
        assert await _stored(redis_client) == 0


async def test_refusal_names_the_configured_scheme(redis_url: str) -> None:
    """The 401 tells the sender what was expected (format only, never the secret)."""
    settings = make_settings(redis_url, webhook_hmac_secret=SECRET,
                             webhook_hmac_signature_header="X-Sig",
                             webhook_hmac_timestamp_header="", webhook_hmac_encoding="base64",
                             webhook_hmac_signature_prefix="", webhook_hmac_algorithm="sha512")
    async with ingress_client(settings) as client:
        resp = await client.post("/webhook", data=event("c-1"), headers=JSON)
        answer = await resp.json()
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'HMAC-SHA512 header="X-Sig"'
    assert "missing X-Sig header" in answer["detail"]
    assert "<base64 HMAC-SHA512 of '<raw body>'>" in answer["detail"]
    assert SECRET not in answer["detail"]


async def test_no_timestamp_scheme_warns_at_start_and_replays_pass(
        redis_url: str, redis_client: aioredis.Redis,
        caplog: pytest.LogCaptureFixture) -> None:
    """Without a timestamp header nothing bounds a replay: the warning says so, and the
    same signed request really is accepted twice."""
    caplog.set_level(logging.WARNING)
    settings = make_settings(redis_url, webhook_hmac_secret=SECRET,
                             webhook_hmac_timestamp_header="")
    body = event("c-1")
    headers = {**JSON, **sign_webhook(SECRET.encode(), body,
                                      WebhookHmacScheme(timestamp_header=None,
                                                        template="{body}"))}
    async with ingress_client(settings) as client:
        assert "replays are not bounded by time" in caplog.text
        for _ in range(2):
            assert (await client.post("/webhook", data=body, headers=headers)).status == 200
    assert await redis_client.xlen(redis_keys.EVENTS_STREAM) == 2
    assert SECRET not in caplog.text


@pytest.mark.parametrize(("overrides", "warning"), [
    ({}, None),
    ({"webhook_hmac_timestamp_header": ""}, "replays are not bounded by time"),
    ({"webhook_hmac_algorithm": "sha1"}, "WEBHOOK_HMAC_ALGORITHM=sha1"),
])
async def test_startup_warnings(redis_url: str, caplog: pytest.LogCaptureFixture,
                                overrides: dict[str, Any], warning: str | None) -> None:
    caplog.set_level(logging.WARNING)
    async with ingress_client(make_settings(redis_url, webhook_hmac_secret=SECRET,
                                            **overrides)):
        pass
    hmac_warnings = [r.getMessage() for r in caplog.records if "WEBHOOK_HMAC" in r.getMessage()]
    if warning is None:
        assert hmac_warnings == []
    else:
        assert any(warning in message for message in hmac_warnings)


# Settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "variable", "advice"), [
    ({"webhook_hmac_encoding": "base32"}, "WEBHOOK_HMAC_ENCODING", "hex, base64"),
    ({"webhook_hmac_algorithm": "HMAC_MD5"}, "WEBHOOK_HMAC_ALGORITHM", "HMAC_SHA_256"),
    ({"webhook_hmac_algorithm": "sha3"}, "WEBHOOK_HMAC_ALGORITHM", "sha256"),
    ({"webhook_hmac_signed_template": "{ts}.{body}"}, "WEBHOOK_HMAC_SIGNED_TEMPLATE",
     "placeholders"),
    ({"webhook_hmac_signed_template": "{timestamp}."}, "WEBHOOK_HMAC_SIGNED_TEMPLATE",
     "exactly once"),
    ({"webhook_hmac_signed_template": "{body}"}, "WEBHOOK_HMAC_SIGNED_TEMPLATE",
     "does not sign {timestamp}"),
    ({"webhook_hmac_timestamp_header": "", "webhook_hmac_signed_template": "{timestamp}.{body}"},
     "WEBHOOK_HMAC_SIGNED_TEMPLATE", "no timestamp header"),
    ({"webhook_hmac_signature_header": "X Sig"}, "WEBHOOK_HMAC_SIGNATURE_HEADER",
     "not an HTTP header name"),
    ({"webhook_hmac_signature_header": ""}, "WEBHOOK_HMAC_SIGNATURE_HEADER",
     "not an HTTP header name"),
    ({"webhook_hmac_timestamp_header": "x-callbridge-signature"},
     "WEBHOOK_HMAC_TIMESTAMP_HEADER", "same header"),
    ({"webhook_hmac_signature_prefix": "sha256\u2013"}, "WEBHOOK_HMAC_SIGNATURE_PREFIX",
     "printable ASCII"),
    ({"webhook_hmac_tolerance_s": 0}, "WEBHOOK_HMAC_TOLERANCE_S", ""),
])
def test_malformed_scheme_refused_at_start_naming_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        overrides: dict[str, Any], variable: str, advice: str) -> None:
    monkeypatch.chdir(tmp_path)  # no .env file
    with pytest.raises(SystemExit) as info:
        load_settings(IngressSettings, _env_file=None, webhook_hmac_secret=SECRET,
                      **overrides)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert variable in err and advice in err
    assert SECRET not in err


def test_scheme_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Empty env values mean "none" (timestamp header, prefix); the template follows."""
    monkeypatch.chdir(tmp_path)
    for name, value in {"WEBHOOK_HMAC_SECRET": SECRET, "WEBHOOK_HMAC_TIMESTAMP_HEADER": "",
                        "WEBHOOK_HMAC_SIGNATURE_PREFIX": "",
                        "WEBHOOK_HMAC_ENCODING": "base64"}.items():
        monkeypatch.setenv(name, value)
    scheme = IngressSettings(_env_file=None).webhook_hmac_scheme
    assert scheme == HmacScheme(timestamp_header=None, signed_template="{body}",
                                encoding="base64", signature_prefix="")


def test_default_scheme_is_the_former_fixed_one(redis_url: str) -> None:
    """Backward compatibility: unset WEBHOOK_HMAC_* settings give exactly the scheme the
    ingress used before it was configurable."""
    scheme = make_settings(redis_url, webhook_hmac_secret=SECRET).webhook_hmac_scheme
    assert scheme == HmacScheme(signature_header="X-Callbridge-Signature",
                                timestamp_header="X-Callbridge-Timestamp",
                                signed_template="{timestamp}.{body}", encoding="hex",
                                signature_prefix="sha256=", algorithm="sha256",
                                tolerance_s=300)


# Pure functions ---------------------------------------------------------------------------

def test_verify_details() -> None:
    secret, body, now = b"k", b'{"a":1}', 1_760_000_000.0
    scheme = HmacScheme()
    headers = sign_headers(secret, body, now=now, scheme=scheme)
    sig, ts = headers["X-Callbridge-Signature"], headers["X-Callbridge-Timestamp"]
    assert verify(secret, body, sig, ts, scheme=scheme, now=now) is None
    # Hex digits in upper case are the same MAC; a truncated MAC is not.
    upper = "sha256=" + sig.removeprefix("sha256=").upper()
    assert verify(secret, body, upper, ts, scheme=scheme, now=now) is None
    assert verify(secret, body, sig[:-2], ts, scheme=scheme, now=now) == "signature mismatch"
    assert verify(secret, body, sig + "00", ts, scheme=scheme, now=now) == "signature mismatch"
    # The timestamp is part of what is signed: a fresher one does not fit the old MAC.
    assert verify(secret, body, sig, str(int(now) + 1), scheme=scheme,
                  now=now) == "signature mismatch"
    assert parse_timestamp("1760000000") == 1_760_000_000
    assert parse_timestamp("1760000000123") == 1_760_000_000.123
    assert parse_timestamp("1760000000.5") == 1_760_000_000.5
    for bad in ("", "-1", "1e9", "nan", "2026-01-01T00:00:00Z", "0x10"):
        assert parse_timestamp(bad) is None


def test_simulator_scheme_parsing() -> None:
    assert WebhookHmacScheme.parse(
        ["header=X-Sig", "timestamp-header=", "template={body}", "encoding=base64",
         "prefix=", "algorithm=sha512"]) == WebhookHmacScheme(
        header="X-Sig", timestamp_header=None, template="{body}", encoding="base64",
        prefix="", algorithm="sha512")
    assert WebhookHmacScheme.parse(["prefix=sha256="]).prefix == "sha256="
    for bad in (["colour=blue"], ["encoding=base32"], ["template={timestamp}"],
                ["algorithm=nope"], ["timestamp-header=", "template={timestamp}.{body}"],
                ["header"]):
        with pytest.raises(ValueError):
            WebhookHmacScheme.parse(bad)


# Independence -----------------------------------------------------------------------------

def _shared_imports(source: str, package: str) -> list[str]:
    """Every module named `callbridge.shared(.*)` (or a bare `shared(.*)`) that `source`
    imports (relative imports resolved against `package`), plus any dynamic import machinery
    it uses."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            names = [module] + [f"{module}.{alias.name}" if module else alias.name
                                for alias in node.names]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
            called = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            if called in ("__import__", "import_module"):
                names = ["<dynamic import>"]
        found += [n for n in names if n == "<dynamic import>"
                  or n.removeprefix("callbridge.").partition(".")[0] == "shared"]
    return found


def test_simulator_does_not_import_the_verifier() -> None:
    """The simulator's signer must stay independent of shared/webhook_signing.py (and every
    other shared module), or a format mistake would be made identically on both sides."""
    source = (ROOT / "simulators" / "infobip" / "webhooks.py").read_text()
    assert _shared_imports(source, "callbridge.simulators.infobip") == []
    # The scan itself finds each way the verifier could creep back in.
    for sneaky in ("from callbridge.shared.webhook_signing import sign_headers",
                   "import callbridge.shared.webhook_signing as ws",
                   "from shared import webhook_signing",
                   "from ... import shared",
                   "importlib.import_module('callbridge.shared.webhook_signing')"):
        assert _shared_imports(sneaky, "callbridge.simulators.infobip"), sneaky
