"""Webhook HMAC signatures: one configurable scheme (`HmacScheme`), pure sign/verify functions.

Infobip's subscriptions offer HMAC security as a secret key plus an algorithm (its OpenAPI
spec's `HmacUrlSecurityConfig`, algorithms HMAC_MD5 .. HMAC_SHA_512), but publish no header
name, signed string or encoding (docs/protocol-assumptions.md, "Webhook HMAC header format").
So every wire detail is a field of `HmacScheme`, set by the ingress's WEBHOOK_HMAC_* settings:

- `signature_header`: the header carrying the signature;
- `timestamp_header`: the header carrying the send time (unix seconds, or milliseconds), or
  None: then nothing bounds a replay in time;
- `signed_template`: the signed bytes, over `{timestamp}` and `{body}` (the raw body bytes,
  never re-encoded), e.g. `{timestamp}.{body}` or `{body}`;
- `encoding` of the MAC (`hex` or `base64`), `signature_prefix` before it (e.g. `sha256=`),
  `algorithm` (sha224/sha256/sha384/sha512; sha1 accepted, warned; md5 refused).

The defaults are callbridge's own scheme: `X-Callbridge-Signature: sha256=<hex>` over
`<timestamp>.<body>`, timestamp in `X-Callbridge-Timestamp`, 300 s tolerance.

Only this module knows the format; the ingress applies it. The Infobip simulator signs with
its own independent code (simulators/infobip/webhooks.py), so a test that pairs the two
checks one implementation against another rather than against itself.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import time
from dataclasses import dataclass

DEFAULT_SIGNATURE_HEADER = "X-Callbridge-Signature"
DEFAULT_TIMESTAMP_HEADER = "X-Callbridge-Timestamp"
DEFAULT_TOLERANCE_S = 300
DEFAULT_TEMPLATE = "{timestamp}.{body}"
BODY_ONLY_TEMPLATE = "{body}"
DEFAULT_PREFIX = "sha256="
DEFAULT_ALGORITHM = "sha256"
ENCODINGS = ("hex", "base64")

#: Digests a scheme may name (hashlib names). md5 is absent on purpose: Infobip offers
#: HMAC_MD5, but a subscription can as well be set to HMAC_SHA_256, so accepting MD5 buys
#: nothing.
ALGORITHMS = frozenset({"sha1", "sha224", "sha256", "sha384", "sha512"})
#: Accepted only because an operator named it; the ingress warns about it on every start.
#: (HMAC-SHA1 has no practical forgery attack, but SHA-1 is deprecated for new designs.)
WEAK_ALGORITHMS = frozenset({"sha1"})

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")   # an HTTP field name, RFC 9110 5.1
_PLACEHOLDER = re.compile(r"\{timestamp\}|\{body\}")
_TIMESTAMP = re.compile(r"^[0-9]{1,16}(\.[0-9]{1,9})?$")
#: Integer timestamps above this are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973).
_MILLISECONDS_ABOVE = 10**11


class SchemeError(ValueError):
    """A malformed scheme; `field` is the `HmacScheme` field at fault, so a caller can name
    its own setting (WEBHOOK_HMAC_<FIELD>)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class HmacScheme:
    """How a webhook is signed. Construction validates every field (SchemeError)."""

    signature_header: str = DEFAULT_SIGNATURE_HEADER
    timestamp_header: str | None = DEFAULT_TIMESTAMP_HEADER
    signed_template: str = DEFAULT_TEMPLATE
    encoding: str = "hex"
    signature_prefix: str = DEFAULT_PREFIX
    algorithm: str = DEFAULT_ALGORITHM
    tolerance_s: int = DEFAULT_TOLERANCE_S

    def __post_init__(self) -> None:
        if not _TOKEN.match(self.signature_header):
            raise SchemeError("signature_header",
                              f"{self.signature_header!r} is not an HTTP header name")
        if self.timestamp_header is not None:
            if not _TOKEN.match(self.timestamp_header):
                raise SchemeError("timestamp_header",
                                  f"{self.timestamp_header!r} is not an HTTP header name "
                                  "(empty or `none` = no timestamp header)")
            if self.timestamp_header.lower() == self.signature_header.lower():
                raise SchemeError("timestamp_header",
                                  "is the same header as the signature header")
        template = self.signed_template
        leftover = _PLACEHOLDER.sub("", template)
        if "{" in leftover or "}" in leftover:
            raise SchemeError("signed_template",
                              f"{template!r}: the only placeholders are {{timestamp}} and "
                              "{body} (no other braces)")
        if template.count("{body}") != 1:
            raise SchemeError("signed_template",
                              f"{template!r} must contain {{body}} exactly once")
        # A timestamp that is not signed bounds nothing (an attacker would just send a fresh
        # one), and a signed one we cannot read cannot be checked: both are refused.
        if self.timestamp_header is None and "{timestamp}" in template:
            raise SchemeError("signed_template",
                              f"{template!r} uses {{timestamp}} but no timestamp header is "
                              "set (set WEBHOOK_HMAC_TIMESTAMP_HEADER, or sign `{body}`)")
        if self.timestamp_header is not None and "{timestamp}" not in template:
            raise SchemeError("signed_template",
                              f"{template!r} does not sign {{timestamp}}, so the timestamp "
                              "header would prove nothing: add {timestamp}, or set "
                              "WEBHOOK_HMAC_TIMESTAMP_HEADER to empty")
        if self.encoding not in ENCODINGS:
            raise SchemeError("encoding", f"{self.encoding!r} is not one of {', '.join(ENCODINGS)}")
        if not all(" " <= ch <= "~" for ch in self.signature_prefix) or \
                self.signature_prefix != self.signature_prefix.lstrip():
            raise SchemeError("signature_prefix",
                              f"{self.signature_prefix!r}: printable ASCII, not starting with "
                              "a space")
        if self.algorithm not in ALGORITHMS:
            raise SchemeError("algorithm",
                              f"{self.algorithm!r} is not one of {', '.join(sorted(ALGORITHMS))}"
                              + (" (choose HMAC_SHA_256 in the Infobip subscription)"
                                 if self.algorithm == "md5" else ""))
        if self.tolerance_s < 1:
            raise SchemeError("tolerance_s", "must be at least 1 second")


DEFAULT_SCHEME = HmacScheme()


def normalise_algorithm(text: str) -> str:
    """`HMAC_SHA_256` (Infobip's spelling), `HMAC-SHA256`, `SHA-256`, `sha256` -> `sha256`."""
    value = text.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    return value.removeprefix("hmac")


def build_scheme(signature_header: str, timestamp_header: str | None,
                 signed_template: str | None, encoding: str, signature_prefix: str,
                 algorithm: str, tolerance_s: int) -> HmacScheme:
    """A scheme from operator text: header names trimmed, an empty or `none` timestamp header
    = none, no template = `{timestamp}.{body}` with a timestamp header and `{body}` without,
    encoding and algorithm case-insensitive (`HMAC_SHA_256` accepted). SchemeError if bad."""
    ts_header = (timestamp_header or "").strip()
    ts = None if ts_header.lower() in ("", "none") else ts_header
    template = signed_template if signed_template else (
        DEFAULT_TEMPLATE if ts is not None else BODY_ONLY_TEMPLATE)
    return HmacScheme(signature_header=signature_header.strip(), timestamp_header=ts,
                      signed_template=template, encoding=encoding.strip().lower(),
                      signature_prefix=signature_prefix,
                      algorithm=normalise_algorithm(algorithm), tolerance_s=tolerance_s)


def signed_bytes(scheme: HmacScheme, timestamp: str | None, body: bytes) -> bytes:
    """The exact bytes the MAC covers: the template with the body spliced in raw (a body is
    bytes, and re-encoding it would change what was signed)."""
    before, _, after = scheme.signed_template.partition("{body}")
    stamp = timestamp or ""
    return (before.replace("{timestamp}", stamp).encode()
            + body + after.replace("{timestamp}", stamp).encode())


def mac(secret: bytes, scheme: HmacScheme, timestamp: str | None, body: bytes) -> bytes:
    return hmac.new(secret, signed_bytes(scheme, timestamp, body), scheme.algorithm).digest()


def encode_mac(scheme: HmacScheme, digest: bytes) -> str:
    text = digest.hex() if scheme.encoding == "hex" else base64.b64encode(digest).decode()
    return scheme.signature_prefix + text


def decode_signature(scheme: HmacScheme, value: str) -> bytes | None:
    """The MAC bytes in a header value (prefix removed), or None when it is not in the
    scheme's form. Hex in either case is accepted; base64 must be standard and padded."""
    value = value.strip()
    if not value.startswith(scheme.signature_prefix):
        return None
    text = value[len(scheme.signature_prefix):]
    try:
        if scheme.encoding == "hex":
            return binascii.unhexlify(text)
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def signature(secret: bytes, timestamp: str | None, body: bytes,
              scheme: HmacScheme = DEFAULT_SCHEME) -> str:
    """The signature header's value."""
    return encode_mac(scheme, mac(secret, scheme, timestamp, body))


def sign_headers(secret: bytes, body: bytes, now: float | None = None,
                 scheme: HmacScheme = DEFAULT_SCHEME) -> dict[str, str]:
    """The headers a sender following `scheme` adds (load generators and ingress tests; the
    Infobip simulator deliberately has its own signer)."""
    if scheme.timestamp_header is None:
        return {scheme.signature_header: signature(secret, None, body, scheme)}
    timestamp = str(int(now if now is not None else time.time()))
    return {scheme.signature_header: signature(secret, timestamp, body, scheme),
            scheme.timestamp_header: timestamp}


def parse_timestamp(text: str) -> float | None:
    """Unix time from a timestamp header: seconds (fraction allowed) or integer
    milliseconds; None for anything else."""
    value = text.strip()
    if not _TIMESTAMP.match(value):
        return None
    stamp = float(value)
    return stamp / 1000 if "." not in value and stamp > _MILLISECONDS_ABOVE else stamp


def verify(secret: bytes, body: bytes, given_signature: str | None,
           given_timestamp: str | None, *, scheme: HmacScheme = DEFAULT_SCHEME,
           now: float | None = None) -> str | None:
    """None when valid, else the reason (for the 401 body; never echoes the secret).

    The MACs are compared as bytes with hmac.compare_digest, so neither the position of the
    first wrong byte nor (for hex) the case of the digits matters."""
    if not given_signature:
        return f"missing {scheme.signature_header} header"
    if scheme.timestamp_header is not None:
        if not given_timestamp:
            return f"missing {scheme.timestamp_header} header"
        stamp = parse_timestamp(given_timestamp)
        if stamp is None:
            return "timestamp is not unix seconds (or milliseconds)"
        current = now if now is not None else time.time()
        if abs(current - stamp) > scheme.tolerance_s:
            return "timestamp outside tolerance (stale or replayed request)"
        given_timestamp = given_timestamp.strip()
    else:
        given_timestamp = None
    given = decode_signature(scheme, given_signature)
    if given is None:
        return (f"signature is not {scheme.signature_prefix!r} + {scheme.encoding}"
                if scheme.signature_prefix else f"signature is not {scheme.encoding}")
    if not hmac.compare_digest(mac(secret, scheme, given_timestamp, body), given):
        return "signature mismatch"
    return None


def describe(scheme: HmacScheme) -> str:
    """What a sender must do, for a 401's detail (names and format only, no secret)."""
    signed = (scheme.signed_template.replace("{timestamp}", "<timestamp>")
              .replace("{body}", "<raw body>"))
    text = (f"send {scheme.signature_header}: {scheme.signature_prefix}<{scheme.encoding} "
            f"HMAC-{scheme.algorithm.upper()} of '{signed}'>")
    if scheme.timestamp_header is not None:
        text += f" with {scheme.timestamp_header}: <unix seconds>"
    return text
