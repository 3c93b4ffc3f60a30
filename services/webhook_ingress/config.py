"""Ingress settings: one typed object, read from the environment (env var = field name
upper-cased) or `.env`; the CLI's flags override single fields.

Secrets (Basic password, HMAC secret) are `SecretStr`, so printing the settings or logging
them shows `**********`, never the value.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from shared.settings import CommonSettings
from shared.webhook_signing import (
    DEFAULT_SIGNATURE_HEADER,
    DEFAULT_TIMESTAMP_HEADER,
    DEFAULT_TOLERANCE_S,
)

Network = IPv4Network | IPv6Network


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
        75.0, gt=0, description="Idle keep-alive connections are closed after this."
    )

    # Input bounds ---------------------------------------------------------------------
    ingress_max_body_bytes: int = Field(65536, ge=1, description="Larger bodies get 413.")
    ingress_body_timeout_s: float = Field(
        10.0, gt=0,
        description="A body not fully received within this is cut off (408): a stalled or "
        "slowloris sender holds one connection, never the process.",
    )

    # Durability -----------------------------------------------------------------------
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

    # Authentication (all optional; every configured check must pass) -------------------
    webhook_basic_user: str | None = None
    webhook_basic_password: SecretStr | None = None
    webhook_hmac_secret: SecretStr | None = None
    webhook_hmac_signature_header: str = DEFAULT_SIGNATURE_HEADER
    webhook_hmac_timestamp_header: str = DEFAULT_TIMESTAMP_HEADER
    webhook_hmac_tolerance_s: int = Field(DEFAULT_TOLERANCE_S, ge=1)
    webhook_allowlist: Annotated[list[Network], NoDecode] = Field(
        default_factory=list,
        description="Source networks allowed to post (comma separated); empty = any.",
    )
    webhook_trusted_proxies: Annotated[list[Network], NoDecode] = Field(
        default_factory=list,
        description="Proxies whose X-Forwarded-For / Forwarded headers are believed.",
    )

    _split_allowlist = field_validator("webhook_allowlist", "webhook_trusted_proxies",
                                       mode="before")(_split_networks)

    @model_validator(mode="after")
    def _basic_pair(self) -> IngressSettings:
        if (self.webhook_basic_user is None) != (self.webhook_basic_password is None):
            raise ValueError(
                "set both WEBHOOK_BASIC_USER and WEBHOOK_BASIC_PASSWORD, or neither"
            )
        return self
