"""Settings shared by every service, read from the environment or a `.env` file.

The variable names are a contract with deployment tooling (compose.yaml, the runbook):
keep them. Each service extends `CommonSettings` in its own `config.py` with the knobs
only it needs, so services never edit each other's settings.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, DotEnvSettingsSource, SettingsConfigDict

from callbridge.shared.logging_setup import redact

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class CommonSettings(BaseSettings):
    """What every callbridge process needs to know."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis holding streams, jobs and call state."
    )
    log_level: LogLevel = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: Literal["json", "text"] = Field(
        "json", description="json: one object a line with call_id (production); text: for humans")


class InfobipSettings(BaseSettings):
    """The Calls API account the orchestrator acts on."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    infobip_base_url: str = Field(..., description="e.g. https://xxxxx.api.infobip.com")
    infobip_api_key: SecretStr = Field(..., description="Calls API key (scope calls:manage)")
    infobip_media_stream_config_id: str = Field(
        ..., description="id of the WEBSOCKET_ENDPOINT media-stream config (callbridge setup)"
    )


class OpenAISettings(BaseSettings):
    """The Realtime model the media gateway talks to."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    openai_api_key: SecretStr = Field(..., description="sent as `Authorization: Bearer`")
    openai_realtime_url: str = Field("wss://api.openai.com/v1/realtime",
                                     description="GA Realtime WebSocket endpoint")
    openai_model: str = Field("gpt-realtime", description="`?model=` of the Realtime URL")

    # Failover: a second Realtime endpoint (another region, or an Azure OpenAI Realtime
    # deployment) a call moves to mid-call when the primary stays down past
    # GATEWAY_MODEL_RECONNECT_TIMEOUT_S or refuses us with a fatal close code.
    openai_secondary_realtime_url: str | None = Field(
        None, description="failover Realtime WebSocket endpoint (wss://; its own query is "
        "kept: `?model=` is added only when it names no `model`/`deployment`); unset: no "
        "failover")
    openai_secondary_api_key: SecretStr | None = Field(
        None, description="the secondary's own key, sent only to the secondary (required "
        "with OPENAI_SECONDARY_REALTIME_URL)")
    openai_secondary_auth: Literal["bearer", "api-key"] = Field(
        "bearer", description="how the secondary key is sent: `Authorization: Bearer` "
        "(OpenAI) or an `api-key` header (Azure OpenAI key auth)")
    openai_secondary_model: str | None = Field(
        None, description="model (Azure: deployment name) for the secondary's `?model=` and "
        "session; unset: OPENAI_MODEL")

    @field_validator("openai_realtime_url", "openai_secondary_realtime_url")
    @classmethod
    def _websocket_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if redact(value) != value:
            # The key travels in a header: a credential in the URL (user:password@, or a
            # query parameter such as Azure's `api-key=`) would reach logs and proxies.
            # Not echoed: the message would print it.
            raise ValueError("the URL carries a credential (user:password@ or a key in its "
                             "query): set the key in its own variable instead")
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"{value!r} is not a ws:// or wss:// URL with a host")
        return value

    @model_validator(mode="after")
    def _secondary_endpoint(self) -> OpenAISettings:
        """A secondary endpoint needs its own key (the primary's is never sent to another
        host), and its key must not cross the network in clear text."""
        url, key = self.openai_secondary_realtime_url, self.openai_secondary_api_key
        if url is None:
            if key is not None:
                raise ValueError(
                    "OPENAI_SECONDARY_API_KEY is set but OPENAI_SECONDARY_REALTIME_URL is not: "
                    "failover would be silently off; set the URL, or unset the key")
            return self
        if key is None or not key.get_secret_value().strip():
            raise ValueError(
                "OPENAI_SECONDARY_REALTIME_URL is set but OPENAI_SECONDARY_API_KEY is not: "
                "the secondary needs its own key (the primary's is never sent to it)")
        if urlsplit(url).scheme == "ws" and not _is_loopback(urlsplit(url).hostname) \
                and urlsplit(self.openai_realtime_url).scheme != "ws":
            # Plain ws:// carries the key in clear text: only to this machine, or in a
            # deployment whose primary is plain ws:// too (simulators, e.g. compose.yaml).
            raise ValueError(
                "OPENAI_SECONDARY_REALTIME_URL is ws:// to another host while the primary is "
                "wss://: the key would travel in clear text; use wss://")
        return self

    @property
    def openai_secondary_model_name(self) -> str:
        """The secondary's model (Azure: deployment name): OPENAI_MODEL unless set."""
        return self.openai_secondary_model or self.openai_model


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


S = TypeVar("S", bound=BaseSettings)


def describe_validation_error(exc: ValidationError) -> str:
    """Turn pydantic's error into lines that name the environment variable to fix."""
    lines = []
    for err in exc.errors():
        name = "_".join(str(p) for p in err["loc"]).upper() or "(settings)"
        if err["type"] == "missing":
            lines.append(f"  {name} is not set (environment variable or .env file)")
        else:
            lines.append(f"  {name}: {err['msg']}")
    return "\n".join(lines)


def renamed_variables_in_use(cls: type[BaseSettings],
                             environ: Mapping[str, str] | None = None) -> list[str]:
    """Old names of renamed variables still set: the settings ignore unknown names, so an old
    name would otherwise be dropped without a word and the service run on the default.
    `cls.RENAMED_VARIABLES` maps old name -> new name; the `.env` file counts too."""
    renamed: dict[str, str] = getattr(cls, "RENAMED_VARIABLES", {})
    if not renamed:
        return []
    seen = {k.upper() for k in (os.environ if environ is None else environ)}
    if environ is None:  # what pydantic-settings reads from the .env file, unknown names too
        seen |= {k.upper() for k in DotEnvSettingsSource(cls).env_vars}
    return [f"  {old} was renamed {new}: set {new} instead"
            for old, new in sorted(renamed.items()) if old in seen]


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings, or exit with a message naming each missing, bad or renamed variable."""
    stale = renamed_variables_in_use(cls)
    if stale:
        sys.stderr.write(f"callbridge: configuration for {cls.__name__} uses old names:\n"
                         + "\n".join(stale) + "\n")
        raise SystemExit(2)
    try:
        return cls(**overrides)
    except ValidationError as exc:
        sys.stderr.write(
            f"callbridge: invalid configuration for {cls.__name__}:\n"
            f"{describe_validation_error(exc)}\n"
            "Set the variables above (see README.md, 'Configuration') and start again.\n"
        )
        raise SystemExit(2) from None
