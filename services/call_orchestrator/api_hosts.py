"""Where the Calls API key may be sent: the `apiBaseUrl` of a webhook, only if it is Infobip's.

Infobip names, in every call event, "the base URL of the API which you should invoke for all
actions related to the call" (`properties.apiBaseUrl`; Infobip Voice API spec,
https://www.infobip.com/docs/api/channels/voice/calls). That value arrives in a request
anyone on the internet can send, and every request we make with it carries
`Authorization: App <key>`: followed blindly, one forged webhook hands the key (and a media
token) to any host. So an `apiBaseUrl` is used only when it is

- the configured INFOBIP_BASE_URL's own origin (scheme, host and port), or
- `https`, on the default port, with a host matching INFOBIP_API_HOSTS (default: Infobip's
  API domains `api.infobip.com` and `*.api.infobip.com`),

with no user info, query or fragment and no path beyond `/`. A URL without a scheme
(`xyz.api.infobip.com`; the spec gives no example, docs/protocol-assumptions.md) is read as
https. Anything else is replaced by the configured base URL, logged (host only) and counted
by reason: the call still gets served, through the account's own base URL.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from .metrics import API_BASE_REFUSED

log = logging.getLogger(__name__)

DEFAULT_API_HOSTS = ("api.infobip.com", "*.api.infobip.com")

RefusalReason = Literal["malformed", "not_https", "port", "path", "userinfo", "host"]

#: Longest apiBaseUrl looked at (a real one is a few dozen characters).
MAX_URL_CHARS = 512


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        default = {"https": 443, "http": 80}.get(self.scheme)
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6 literal
        netloc = host if self.port == default else f"{host}:{self.port}"
        return f"{self.scheme}://{netloc}"


def parse_origin(url: str) -> tuple[Origin | None, RefusalReason | None]:
    """The origin of a base URL, or why it is not a plain one."""
    text = url.strip()
    if not text or len(text) > MAX_URL_CHARS or any(c.isspace() for c in text):
        return None, "malformed"
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None, "malformed"
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in ("http", "https") or not host:
        return None, "malformed"
    if parts.username is not None or parts.password is not None:
        return None, "userinfo"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None, "path"
    return Origin(scheme, host, port or (443 if scheme == "https" else 80)), None


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """`*.api.infobip.com` matches one or more labels before `.api.infobip.com`."""
    host = host.lower()
    return any(fnmatch.fnmatchcase(host, p.lower()) if "*" in p else host == p.lower()
               for p in patterns)


class ApiBasePolicy:
    """Decides, for each request, the base URL the key may go to (see the module doc)."""

    def __init__(self, configured_base_url: str, allowed_hosts: Sequence[str]) -> None:
        origin, problem = parse_origin(configured_base_url)
        if origin is None:
            raise ValueError(f"INFOBIP_BASE_URL is not a plain base URL ({problem}): give "
                             "scheme and host only, e.g. https://xxxxx.api.infobip.com")
        self.configured = origin
        self.allowed_hosts = tuple(allowed_hosts)

    @property
    def default_url(self) -> str:
        return self.configured.url

    def check(self, api_base_url: str) -> tuple[str | None, RefusalReason | None]:
        """(usable base URL, None), or (None, why it was refused)."""
        origin, problem = parse_origin(api_base_url)
        if origin is None:
            return None, problem
        if origin == self.configured:
            return origin.url, None
        if origin.scheme != "https":
            return None, "not_https"
        if origin.port != 443:
            return None, "port"
        if not host_allowed(origin.host, self.allowed_hosts):
            return None, "host"
        return origin.url, None

    def choose(self, api_base_url: str | None) -> str:
        """The base URL to use for a call: its event's `apiBaseUrl` when allowed, else the
        configured one (a refusal is logged with the host alone, and counted)."""
        if not api_base_url:
            return self.default_url
        chosen, reason = self.check(api_base_url)
        if chosen is not None:
            return chosen
        assert reason is not None
        API_BASE_REFUSED.labels(reason).inc()
        log.warning("apiBaseUrl refused (%s): using the configured base URL instead; if "
                    "Infobip really serves this account from that host, add it to "
                    "INFOBIP_API_HOSTS", reason,
                    extra={"refused_host": _host_for_log(api_base_url)})
        return self.default_url


def _host_for_log(url: str) -> str:
    """The host alone (never user info, path or query: they may carry secrets), bounded."""
    text = url.strip()[:MAX_URL_CHARS]
    try:
        host = urlsplit(text if "://" in text else "https://" + text).hostname
    except ValueError:
        host = None
    return (host or "?")[:100]
