"""The Realtime endpoints a call's model socket may use: the primary, then a secondary.

Both speak the same GA protocol (https://platform.openai.com/docs/guides/realtime-websocket);
each has its own URL, key and auth header. OpenAI takes `Authorization: Bearer <key>`; Azure
OpenAI's key auth takes an `api-key: <key>` header, and its GA URL is
`wss://<resource>.openai.azure.com/openai/v1/realtime?model=<deployment>` (the older preview
form names `?deployment=` and an `api-version`)
(https://learn.microsoft.com/azure/foundry/openai/how-to/realtime-audio-websockets;
docs/protocol-assumptions.md). A key is only ever sent to its own endpoint's URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, quote, urlsplit

from pydantic import SecretStr

from callbridge.shared.logging_setup import redact
from callbridge.shared.settings import OpenAISettings

Role = Literal["primary", "secondary"]
AuthScheme = Literal["bearer", "api-key"]

#: Query parameters that already name the model: the URL is then used as configured.
_MODEL_PARAMS = frozenset({"model", "deployment"})


def realtime_url(base: str, model: str) -> str:
    """`base` with `model=` added, unless its own query already names a model or (Azure
    preview form) a deployment: an operator's URL is never second-guessed."""
    query = urlsplit(base).query
    if any(name in _MODEL_PARAMS for name, _ in parse_qsl(query, keep_blank_values=True)):
        return base
    sep = "&" if query else ("" if base.endswith("?") else "?")
    return f"{base}{sep}model={quote(model, safe='')}"


@dataclass(frozen=True)
class ModelEndpoint:
    """One Realtime endpoint: where to connect, which model, and its own credential."""

    role: Role
    url: str
    model: str
    key: SecretStr  # repr shows '**********'
    auth: AuthScheme = "bearer"

    def headers(self) -> dict[str, str]:
        """The handshake's credential header, for this endpoint only."""
        secret = self.key.get_secret_value()
        if self.auth == "api-key":
            return {"api-key": secret}
        return {"Authorization": f"Bearer {secret}"}

    @property
    def redacted_url(self) -> str:
        """The URL as logs may show it (credentials in a query string hidden)."""
        return redact(self.url)

    def describe(self) -> str:
        return f"{self.role} {self.redacted_url}"


def model_endpoints(settings: OpenAISettings) -> tuple[ModelEndpoint, ...]:
    """The primary, then the secondary when one is configured (settings validated that it
    has its own key)."""
    primary = ModelEndpoint("primary", realtime_url(settings.openai_realtime_url,
                                                    settings.openai_model),
                            settings.openai_model, settings.openai_api_key)
    url, key = settings.openai_secondary_realtime_url, settings.openai_secondary_api_key
    if url is None or key is None:
        return (primary,)
    model = settings.openai_secondary_model_name
    return (primary, ModelEndpoint("secondary", realtime_url(url, model), model, key,
                                   settings.openai_secondary_auth))
