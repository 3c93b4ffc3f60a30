"""Settings shared by every service, read from the environment or a `.env` file.

The variable names are a contract with deployment tooling (compose.yaml, the runbook):
keep them. Each service extends `CommonSettings` in its own `config.py` with the knobs
only it needs, so services never edit each other's settings.
"""

from __future__ import annotations

import sys
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

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


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings, or exit with a message naming each missing or bad variable."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        sys.stderr.write(
            f"callbridge: invalid configuration for {cls.__name__}:\n"
            f"{describe_validation_error(exc)}\n"
            "Set the variables above (see README.md, 'Configuration') and start again.\n"
        )
        raise SystemExit(2) from None
