"""HMAC-SHA256 webhook signatures, shared by the ingress (verify) and the simulator (sign).

Infobip offers HMAC subscriptions (HMAC-SHA256 among the algorithms) but the header name and
the exact signed string are *unverified* (../shared/reference/infobip-calls.md), so both are
configurable. Default scheme: header `X-Callbridge-Signature: sha256=<hex>` over
`<timestamp>.<raw body>`, timestamp (unix seconds) in `X-Callbridge-Timestamp`; a timestamp
outside the tolerance is refused, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

DEFAULT_SIGNATURE_HEADER = "X-Callbridge-Signature"
DEFAULT_TIMESTAMP_HEADER = "X-Callbridge-Timestamp"
DEFAULT_TOLERANCE_S = 300


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def sign_headers(secret: bytes, body: bytes, now: float | None = None,
                 signature_header: str = DEFAULT_SIGNATURE_HEADER,
                 timestamp_header: str = DEFAULT_TIMESTAMP_HEADER) -> dict[str, str]:
    timestamp = str(int(now if now is not None else time.time()))
    return {signature_header: signature(secret, timestamp, body), timestamp_header: timestamp}


def verify(secret: bytes, body: bytes, given_signature: str | None, given_timestamp: str | None,
           tolerance_s: int = DEFAULT_TOLERANCE_S, now: float | None = None) -> str | None:
    """None when valid, else the reason (for the 401 body; never echoes the secret)."""
    if not given_signature or not given_timestamp:
        return "missing signature or timestamp header"
    try:
        stamp = int(given_timestamp)
    except ValueError:
        return "timestamp is not unix seconds"
    current = now if now is not None else time.time()
    if abs(current - stamp) > tolerance_s:
        return "timestamp outside tolerance (stale or replayed request)"
    expected = signature(secret, given_timestamp, body)
    if not hmac.compare_digest(expected.encode(), given_signature.strip().encode()):
        return "signature mismatch"
    return None
