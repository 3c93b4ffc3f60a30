"""The failover endpoint's settings and URLs (model_endpoints.py, shared/settings.py): each
endpoint gets its own key in its own header; a misconfigured secondary is refused at start."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from callbridge.services.media_gateway.config import GatewaySettings
from callbridge.services.media_gateway.model_endpoints import model_endpoints, realtime_url
from callbridge.shared.settings import describe_validation_error

PRIMARY_KEY = "sk-primary-6d1f"
SECONDARY_KEY = "azure-key-88c2"
AZURE_URL = "wss://my-resource.openai.azure.com/openai/v1/realtime"


def settings(**values: Any) -> GatewaySettings:
    base: dict[str, Any] = {"openai_api_key": PRIMARY_KEY}
    return GatewaySettings(_env_file=None, **{**base, **values})


def refusal(**values: Any) -> str:
    with pytest.raises(ValidationError) as info:
        settings(**values)
    return describe_validation_error(info.value)


@pytest.mark.parametrize(("base", "expected"), [
    ("wss://api.openai.com/v1/realtime", "wss://api.openai.com/v1/realtime?model=gpt-realtime"),
    ("wss://h/openai/realtime?api-version=2025-04-01-preview",
     "wss://h/openai/realtime?api-version=2025-04-01-preview&model=gpt-realtime"),
    ("wss://h/v1/realtime?", "wss://h/v1/realtime?model=gpt-realtime"),
    # The URL already names the model (or an Azure deployment): used as configured.
    ("wss://h/openai/realtime?api-version=x&deployment=eu-rt",
     "wss://h/openai/realtime?api-version=x&deployment=eu-rt"),
    ("wss://h/openai/v1/realtime?model=my-deployment",
     "wss://h/openai/v1/realtime?model=my-deployment"),
])
def test_realtime_url_adds_the_model_only_when_the_url_names_none(base: str,
                                                                 expected: str) -> None:
    assert realtime_url(base, "gpt-realtime") == expected


def test_realtime_url_quotes_the_model() -> None:
    assert realtime_url("wss://h/v1/realtime", "a b&c") == "wss://h/v1/realtime?model=a%20b%26c"


def test_without_a_secondary_there_is_only_the_primary() -> None:
    (primary,) = model_endpoints(settings())
    assert primary.role == "primary"
    assert primary.url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert primary.headers() == {"Authorization": f"Bearer {PRIMARY_KEY}"}


def test_azure_secondary_gets_its_own_key_in_an_api_key_header() -> None:
    primary, secondary = model_endpoints(settings(
        openai_secondary_realtime_url=AZURE_URL, openai_secondary_api_key=SECONDARY_KEY,
        openai_secondary_auth="api-key", openai_secondary_model="rt-deployment"))
    assert primary.headers() == {"Authorization": f"Bearer {PRIMARY_KEY}"}
    assert secondary.role == "secondary"
    assert secondary.url == f"{AZURE_URL}?model=rt-deployment"
    assert secondary.model == "rt-deployment"
    assert secondary.headers() == {"api-key": SECONDARY_KEY}
    assert PRIMARY_KEY not in str(secondary.headers())
    # Neither key shows in what logs may print.
    for endpoint in (primary, secondary):
        assert SECONDARY_KEY not in repr(endpoint) and PRIMARY_KEY not in repr(endpoint)
        assert SECONDARY_KEY not in endpoint.describe()


def test_bearer_secondary_defaults_to_the_primary_model() -> None:
    _, secondary = model_endpoints(settings(
        openai_model="gpt-realtime-mini",
        openai_secondary_realtime_url="wss://eu.example.com/v1/realtime",
        openai_secondary_api_key=SECONDARY_KEY))
    assert secondary.url == "wss://eu.example.com/v1/realtime?model=gpt-realtime-mini"
    assert secondary.headers() == {"Authorization": f"Bearer {SECONDARY_KEY}"}


def test_secondary_without_its_own_key_is_refused() -> None:
    text = refusal(openai_secondary_realtime_url=AZURE_URL)
    assert "OPENAI_SECONDARY_API_KEY is not" in text
    assert "OPENAI_SECONDARY_API_KEY is not" in refusal(
        openai_secondary_realtime_url=AZURE_URL, openai_secondary_api_key="  ")


def test_secondary_key_without_a_url_is_refused() -> None:
    assert "OPENAI_SECONDARY_REALTIME_URL is not" in refusal(
        openai_secondary_api_key=SECONDARY_KEY)


@pytest.mark.parametrize("url", ["https://h/v1/realtime", "h/v1/realtime", "wss:///v1/realtime"])
def test_secondary_url_must_be_a_websocket_url(url: str) -> None:
    text = refusal(openai_secondary_realtime_url=url, openai_secondary_api_key=SECONDARY_KEY)
    assert "OPENAI_SECONDARY_REALTIME_URL" in text and "ws://" in text


@pytest.mark.parametrize("url", ["wss://user:s3cr3t-value@h/v1/realtime",
                                 f"{AZURE_URL}?api-key=s3cr3t-value",
                                 "https://h/openai/realtime?deployment=d&api-key=s3cr3t-value"])
def test_a_key_in_the_url_is_refused_without_printing_it(url: str) -> None:
    text = refusal(openai_secondary_realtime_url=url, openai_secondary_api_key=SECONDARY_KEY)
    assert "OPENAI_SECONDARY_REALTIME_URL" in text and "credential" in text
    assert "s3cr3t-value" not in text


def test_primary_url_must_be_a_websocket_url() -> None:
    assert "OPENAI_REALTIME_URL" in refusal(openai_realtime_url="https://api.openai.com/v1")


def test_plain_ws_secondary_only_to_loopback_or_beside_a_plain_ws_primary() -> None:
    key = {"openai_secondary_api_key": SECONDARY_KEY}
    text = refusal(openai_secondary_realtime_url="ws://eu.example.com/v1/realtime", **key)
    assert "clear text" in text
    for host in ("127.0.0.1", "localhost", "[::1]"):
        settings(openai_secondary_realtime_url=f"ws://{host}:8061/v1/realtime", **key)
    # A simulator deployment (compose.yaml) runs the primary on plain ws:// already.
    settings(openai_realtime_url="ws://host.docker.internal:8060/v1/realtime",
             openai_secondary_realtime_url="ws://host.docker.internal:8061/v1/realtime", **key)
