"""Who may post webhooks: source-IP allowlist, HTTP Basic, HMAC body signature.

Infobip's webhook subscriptions offer BASIC and HMAC (a secret and an algorithm), but no
published HMAC header or signed-string format, so the HMAC check applies a configurable
scheme (WEBHOOK_HMAC_*; format logic in shared/webhook_signing.py; why in
docs/protocol-assumptions.md, "Webhook HMAC header format").

Every configured check must pass. Secrets are compared in constant time (over SHA-256
digests, so not even the length leaks) and never appear in a response or a log line.
A refused request stores nothing, not even in the rejected stream.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from multidict import CIMultiDictProxy

from callbridge.services.webhook_ingress.config import (
    DEFAULT_CLIENT_ADDRESS_HEADER,
    IngressSettings,
    Network,
)
from callbridge.shared.webhook_signing import WEAK_ALGORITHMS, describe, verify

log = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address
BASIC_CHALLENGE = 'Basic realm="callbridge-webhook", charset="UTF-8"'


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was refused: HTTP status, machine code, human detail, extra headers."""

    status: int
    code: str
    detail: str
    headers: tuple[tuple[str, str], ...] = ()


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def parse_ip(text: str | None) -> IPAddress | None:
    """An address from a peer name or a forwarded hop: `1.2.3.4`, `1.2.3.4:80`, `[::1]:80`,
    `"[::1]"`; None for `unknown`, obfuscated identifiers or garbage."""
    if not text:
        return None
    value = text.strip().strip('"')
    if value.startswith("["):
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:  # IPv4 with a port; a bare IPv6 has several colons
        value = value.split(":", 1)[0]
    try:
        return ip_address(value)
    except ValueError:
        return None


def forwarded_chain(headers: CIMultiDictProxy[str], header: str) -> list[str]:
    """Hops left to right from the ONE configured client-address header (X-Forwarded-For by
    default; several header lines are one comma-separated list, RFC 9110 section 5.3).

    Only one header is ever read: with two (say `Forwarded` and `X-Forwarded-For`), a client
    could send the one the proxy does not overwrite and have it win. Our load balancer
    deletes client-supplied copies and sets this one (services/stack/haproxy.py)."""
    return [hop for hop in ",".join(headers.getall(header, [])).split(",") if hop.strip()]


def _in_any(address: IPAddress, networks: Iterable[Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_address(peer: str | None, headers: CIMultiDictProxy[str],
                   trusted_proxies: Sequence[Network],
                   header: str = DEFAULT_CLIENT_ADDRESS_HEADER) -> IPAddress | None:
    """The sender's address. The client-address header is believed only when the TCP peer
    is a trusted proxy, and then only up to the first hop that is not itself a trusted proxy
    (walking right to left), so a client cannot spoof its way in with its own header. A
    trusted proxy that forwarded no header leaves the proxy's own address (never allowed
    unless the proxy itself is allowlisted)."""
    address = parse_ip(peer)
    if address is None or not _in_any(address, trusted_proxies):
        return address
    for hop in reversed(forwarded_chain(headers, header)):
        hop_address = parse_ip(hop)
        if hop_address is None:
            return None  # unparseable hop from a trusted proxy: do not guess
        address = hop_address
        if not _in_any(hop_address, trusted_proxies):
            break
    return address


class Authenticator:
    """The configured checks, split by when they can run: before the body (IP, Basic) and
    after it (HMAC needs the exact raw bytes)."""

    def __init__(self, settings: IngressSettings) -> None:
        self.allowlist = list(settings.webhook_allowlist)
        self.trusted_proxies = list(settings.webhook_trusted_proxies)
        self.client_address_header = settings.webhook_client_address_header
        self._basic: tuple[bytes, bytes] | None = None
        if settings.webhook_basic_user is not None and settings.webhook_basic_password is not None:
            self._basic = (
                _digest(settings.webhook_basic_user.encode()),
                _digest(settings.webhook_basic_password.get_secret_value().encode()),
            )
        secret = settings.webhook_hmac_secret
        self._hmac_secret = secret.get_secret_value().encode() if secret else None
        self._scheme = settings.webhook_hmac_scheme
        if self._hmac_secret is not None:
            self._warn_weak_scheme()

    def _warn_weak_scheme(self) -> None:
        """Built once per start (create_app), so these land in every start's log."""
        scheme = self._scheme
        if scheme.timestamp_header is None:
            log.warning("WEBHOOK_HMAC_TIMESTAMP_HEADER is empty: HMAC signatures carry no "
                        "timestamp, so a captured webhook can be replayed at any later time "
                        "(replays are not bounded by time; use TLS and a source allowlist)")
        if scheme.algorithm in WEAK_ALGORITHMS:
            log.warning("WEBHOOK_HMAC_ALGORITHM=%s: SHA-1 is deprecated; choose HMAC_SHA_256 "
                        "in the Infobip subscription and here", scheme.algorithm)

    @property
    def authenticated(self) -> bool:
        """Basic or HMAC is on (the allowlist alone authenticates nobody)."""
        return self._basic is not None or self._hmac_secret is not None

    @property
    def needs_body(self) -> bool:
        return self._hmac_secret is not None

    def check_peer(self, peer: str | None, headers: CIMultiDictProxy[str]) -> Refusal | None:
        """Allowlist and Basic: both answerable from the headers alone."""
        if self.allowlist:
            address = client_address(peer, headers, self.trusted_proxies,
                                     self.client_address_header)
            if address is None or not _in_any(address, self.allowlist):
                # 403, not 401: no credential would change the answer. The advice names
                # what the proxy must do before it may be trusted.
                return Refusal(403, "forbidden_source",
                               "this source address may not post webhooks; add it to "
                               "WEBHOOK_ALLOWLIST. Behind a proxy: list the proxy in "
                               "WEBHOOK_TRUSTED_PROXIES only if it deletes client-supplied "
                               f"{self.client_address_header} headers and sets its own "
                               "(callbridge's generated HAProxy config does)")
        if self._basic is not None:
            problem = self._check_basic(headers.get("Authorization"))
            if problem:
                return Refusal(401, "unauthorized", problem,
                               (("WWW-Authenticate", BASIC_CHALLENGE),))
        return None

    def _check_basic(self, header: str | None) -> str | None:
        assert self._basic is not None
        if not header or header[:6].lower() != "basic ":
            return "send HTTP Basic credentials (Authorization: Basic ...)"
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return "the Authorization header is not valid Basic (base64 of user:password)"
        user, sep, password = decoded.partition(b":")
        # Both compared every time (no short-circuit on the user name).
        user_ok = hmac.compare_digest(_digest(user), self._basic[0])
        password_ok = hmac.compare_digest(_digest(password), self._basic[1])
        if not (sep and user_ok and password_ok):
            return "wrong user name or password"
        return None

    def check_body(self, headers: CIMultiDictProxy[str], body: bytes) -> Refusal | None:
        """The configured HMAC scheme over the raw body (callbridge.shared.webhook_signing.verify,
        which compares in constant time and refuses timestamps outside the tolerance)."""
        if self._hmac_secret is None:
            return None
        scheme = self._scheme
        given_ts = headers.get(scheme.timestamp_header) if scheme.timestamp_header else None
        problem = verify(self._hmac_secret, body, headers.get(scheme.signature_header),
                         given_ts, scheme=scheme)
        if problem:
            return Refusal(401, "bad_signature", f"{problem}; {describe(scheme)}",
                           (("WWW-Authenticate", f'HMAC-{scheme.algorithm.upper()} '
                                                 f'header="{scheme.signature_header}"'),))
        return None
