"""Ingress settings: one typed object, read from the environment (env var = field name
upper-cased) or `.env`; the CLI's flags override single fields.

Secrets (Basic password, HMAC secret) are `SecretStr`, so printing the settings or logging
them shows `**********`, never the value.

Secure by default: settings that would leave the webhook open (no authentication at all, an
empty secret) do not validate; running without authentication is an explicit, logged choice
(`WEBHOOK_ALLOW_UNAUTHENTICATED=true`), and so is acknowledging into a Redis without AOF
(`INGRESS_REQUIRE_AOF=false`).
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from callbridge.shared.settings import CommonSettings
from callbridge.shared.webhook_signing import (
    DEFAULT_ALGORITHM,
    DEFAULT_PREFIX,
    DEFAULT_SIGNATURE_HEADER,
    DEFAULT_TIMESTAMP_HEADER,
    DEFAULT_TOLERANCE_S,
    HmacScheme,
    SchemeError,
    build_scheme,
)

Network = IPv4Network | IPv6Network

#: The one header carrying the client's address, set by our load balancer (which deletes any
#: copy the client sent; services/stack/haproxy.py) and read only from trusted proxies.
DEFAULT_CLIENT_ADDRESS_HEADER = "X-Forwarded-For"


def _split_networks(value: Any) -> Any:
    """`10.0.0.0/8, 192.168.1.7` (comma separated, as one env var) -> a list of networks."""
    if isinstance(value, str):
        return [ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip()]
    return value


class IngressSettings(CommonSettings):
    """What the webhook ingress needs beyond REDIS_URL / LOG_LEVEL / LOG_FORMAT."""

    # Listening ------------------------------------------------------------------------
    ingress_host: str = Field(
        "127.0.0.1",
        description="Address to bind. 0.0.0.0 in a container or when Infobip reaches the "
        "process directly; 127.0.0.1 behind a local load balancer.",
    )
    ingress_port: int = Field(8080, ge=0, le=65535)
    webhook_path: str = Field("/webhook", pattern=r"^/")
    ingress_uvloop: bool = Field(True, description="Use uvloop's event loop when installed.")
    ingress_keepalive_timeout_s: float = Field(
        10.0, gt=0,
        description="A connection without a complete request head this long after it opened "
        "(or after its previous response) is closed: the idle keep-alive bound, and the bound "
        "on a client dribbling its headers (aiohttp's keep-alive timer is its only header "
        "timeout).",
    )

    # Input bounds ---------------------------------------------------------------------
    ingress_max_body_bytes: int = Field(65536, ge=1, description="Larger bodies get 413.")
    ingress_event_max_bytes: int = Field(
        16384, ge=1,
        description="Largest stored event of a type callbridge knows (CALL_*, DIALOG_*, "
        "MEDIA_STREAM_*); larger get 413. The simulator's are 0.7-2.1 KB.",
    )
    ingress_unknown_event_max_bytes: int = Field(
        4096, ge=1,
        description="Largest stored event of any other type (stored, not acted on).",
    )
    ingress_event_type_max_bytes: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict,
        description="Per-type overrides, comma separated TYPE=BYTES (e.g. "
        "TRANSCRIPTION=16384).",
    )
    ingress_body_timeout_s: float = Field(
        10.0, gt=0,
        description="A body not fully received within this is cut off (408): a stalled or "
        "slowloris sender holds one connection, never the process.",
    )

    # Durability -----------------------------------------------------------------------
    ingress_require_aof: bool = Field(
        True,
        description="Refuse to start unless Redis has AOF on (CONFIG GET appendonly): an "
        "acknowledged event must survive a Redis restart. false = an explicit choice, warned "
        "on every start.",
    )
    ingress_coalesce: bool = Field(
        True,
        description="Coalesce concurrent requests' XADDs into one pipeline per loop turn. "
        "False = one awaited XADD per request (only for benchmarking the difference).",
    )
    ingress_append_timeout_s: float = Field(
        2.0, gt=0, description="An XADD not acknowledged within this answers 503."
    )
    ingress_retry_after_s: int = Field(5, ge=0, description="Retry-After sent with 503.")
    ingress_max_batch: int = Field(1000, ge=1, description="Most XADDs in one pipeline.")
    ingress_max_pending: int = Field(
        20000, ge=1, description="Appends waiting beyond this answer 503 at once."
    )
    ingress_redis_max_connections: int = Field(256, ge=2)
    ingress_ready_timeout_s: float = Field(0.5, gt=0, description="Bound on /readyz's PING.")
    events_maxlen: int = Field(
        1_000_000, ge=0,
        description="XADD MAXLEN ~ for the events stream (0: no length trimming).",
    )
    events_max_age_s: int = Field(
        0, ge=0,
        description="When > 0, trim by age instead of length: XADD MINID ~ <now - age> "
        "(Redis takes one trim strategy per XADD, so age wins over EVENTS_MAXLEN).",
    )
    rejected_maxlen: int = Field(10_000, ge=1, description="MAXLEN ~ of the rejected stream.")

    # Shutdown -------------------------------------------------------------------------
    ingress_drain_delay_s: float = Field(
        2.0, ge=0,
        description="After SIGTERM /readyz answers 503 for this long before the listener "
        "closes, so the load balancer stops sending first.",
    )
    ingress_shutdown_timeout_s: float = Field(
        15.0, gt=0, description="Longest wait for in-flight requests after the listener closed."
    )

    # Authentication (at least one of Basic / HMAC; every configured check must pass) ----
    webhook_basic_user: str | None = None
    webhook_basic_password: SecretStr | None = None
    webhook_hmac_secret: SecretStr | None = None
    webhook_allow_unauthenticated: bool = Field(
        False,
        description="Start without Basic or HMAC (anyone who reaches the port may post "
        "events). An explicit choice, warned on every start.",
    )
    # The HMAC scheme: Infobip publishes no header or signed-string format, so every part
    # is a setting (docs/protocol-assumptions.md, "Webhook HMAC header format"; format
    # logic in shared/webhook_signing.py). Defaults = callbridge's own scheme.
    webhook_hmac_signature_header: str = Field(
        DEFAULT_SIGNATURE_HEADER, description="Header carrying the HMAC signature.")
    webhook_hmac_timestamp_header: str | None = Field(
        DEFAULT_TIMESTAMP_HEADER,
        description="Header carrying the send time (unix seconds or milliseconds); empty or "
        "`none` = no timestamp, so replays are not bounded in time (warned on every start).",
    )
    webhook_hmac_signed_template: str | None = Field(
        None,
        description="What is signed, over {timestamp} and {body} (the raw body), e.g. "
        "`{timestamp}.{body}` or `{body}`; unset = `{timestamp}.{body}` with a timestamp "
        "header, `{body}` without.",
    )
    webhook_hmac_encoding: str = Field(
        "hex", description="How the MAC is written: `hex` (either case) or `base64`.")
    webhook_hmac_signature_prefix: str = Field(
        DEFAULT_PREFIX,
        description="Text before the encoded MAC in the header value (e.g. `sha256=`); "
        "empty = none.",
    )
    webhook_hmac_algorithm: str = Field(
        DEFAULT_ALGORITHM,
        description="sha256, sha384, sha512 or sha224 (Infobip's HMAC_SHA_256 spelling "
        "accepted); sha1 only if named here, warned on every start; md5 refused.",
    )
    webhook_hmac_tolerance_s: int = Field(
        DEFAULT_TOLERANCE_S, ge=1,
        description="Replay window: a timestamp further than this from now is refused.")
    webhook_allowlist: Annotated[list[Network], NoDecode] = Field(
        default_factory=list,
        description="Source networks allowed to post (comma separated); empty = any.",
    )
    webhook_trusted_proxies: Annotated[list[Network], NoDecode] = Field(
        default_factory=list,
        description="Proxies whose WEBHOOK_CLIENT_ADDRESS_HEADER is believed.",
    )
    webhook_client_address_header: str = Field(
        DEFAULT_CLIENT_ADDRESS_HEADER, min_length=1,
        description="The one header a trusted proxy puts the client's address in (our "
        "HAProxy config sets it and deletes client-supplied copies); any other forwarding "
        "header (Forwarded, X-Real-IP) is ignored.",
    )

    _split_allowlist = field_validator("webhook_allowlist", "webhook_trusted_proxies",
                                       mode="before")(_split_networks)

    @field_validator("ingress_event_type_max_bytes", mode="before")
    @classmethod
    def _split_type_limits(cls, value: Any) -> Any:
        """`TRANSCRIPTION=16384, X=512` (one env var) -> {"TRANSCRIPTION": 16384, ...}."""
        if not isinstance(value, str):
            return value
        limits: dict[str, int] = {}
        for part in value.split(","):
            if not part.strip():
                continue
            name, sep, size = part.partition("=")
            if not sep or not name.strip() or not size.strip().isdigit():
                raise ValueError(f"{part.strip()!r} is not TYPE=BYTES (e.g. TRANSCRIPTION=16384)")
            limits[name.strip()] = int(size)
        return limits

    @model_validator(mode="after")
    def _authentication(self) -> IngressSettings:
        """Fail closed: an empty secret is a mistake, not "off"; no check at all is refused
        unless the operator said so."""
        if (self.webhook_basic_user is None) != (self.webhook_basic_password is None):
            raise ValueError(
                "set both WEBHOOK_BASIC_USER and WEBHOOK_BASIC_PASSWORD, or neither"
            )
        for name, value in (("WEBHOOK_BASIC_USER", self.webhook_basic_user),
                            ("WEBHOOK_BASIC_PASSWORD", self.webhook_basic_password),
                            ("WEBHOOK_HMAC_SECRET", self.webhook_hmac_secret)):
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if text is not None and not text.strip():
                raise ValueError(
                    f"{name} is set but empty, which would not protect anything: set it to a "
                    "long random value (e.g. `openssl rand -hex 32`), or unset it")
        try:
            # Checked even with HMAC off: a malformed scheme is a mistake either way, and
            # finding it now beats finding it the day HMAC is switched on.
            self.webhook_hmac_scheme  # noqa: B018 (built for its validation)
        except SchemeError as exc:
            raise ValueError(f"WEBHOOK_HMAC_{exc.field.upper()}: {exc}") from None
        if not self.webhook_authenticated and not self.webhook_allow_unauthenticated:
            raise ValueError(
                "no webhook authentication is configured, so anyone reaching the port could "
                "post call events: set WEBHOOK_BASIC_USER + WEBHOOK_BASIC_PASSWORD and/or "
                "WEBHOOK_HMAC_SECRET (the same values as the Infobip subscription), or set "
                "WEBHOOK_ALLOW_UNAUTHENTICATED=true to run open on purpose")
        return self

    @property
    def webhook_hmac_scheme(self) -> HmacScheme:
        """The WEBHOOK_HMAC_* settings as one validated scheme (SchemeError if malformed)."""
        return build_scheme(
            signature_header=self.webhook_hmac_signature_header,
            timestamp_header=self.webhook_hmac_timestamp_header,
            signed_template=self.webhook_hmac_signed_template,
            encoding=self.webhook_hmac_encoding,
            signature_prefix=self.webhook_hmac_signature_prefix,
            algorithm=self.webhook_hmac_algorithm,
            tolerance_s=self.webhook_hmac_tolerance_s)

    @property
    def webhook_authenticated(self) -> bool:
        """Basic or HMAC is on (the allowlist alone is not authentication)."""
        return self.webhook_basic_password is not None or self.webhook_hmac_secret is not None

    def event_max_bytes(self, event_type: str, known: bool) -> int:
        """The size bound of one event of `event_type` (overrides first)."""
        override = self.ingress_event_type_max_bytes.get(event_type)
        if override is not None:
            return override
        return self.ingress_event_max_bytes if known else self.ingress_unknown_event_max_bytes
