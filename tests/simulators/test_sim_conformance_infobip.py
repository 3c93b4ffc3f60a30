"""The Infobip simulator as a witness: it judges with Infobip's published OpenAPI document
(simulators/infobip/spec/), never with callbridge's own models, and it holds its own output
to the same document."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import aiohttp
import pytest

from callbridge.shared.infobip_calls import (
    ChildCallRequest,
    DialogRequest,
    MediaStreamConfig,
    PhoneEndpoint,
    PropagationOptions,
    WebsocketEndpoint,
)
from callbridge.simulators.infobip import InfobipSimulator
from callbridge.simulators.infobip.spec.reduce_spec import reduce
from callbridge.simulators.infobip.spec_validation import SPEC_PATH, SpecViolation, published_spec
from callbridge.simulators.infobip.webhooks import OrderedSender, WebhookPoster

AUTH = {"Authorization": "App sim-infobip-key"}
SIMULATORS = Path(__file__).resolve().parents[2] / "simulators"


def test_the_vendored_spec_is_the_published_one_and_closed_under_references() -> None:
    document = json.loads(SPEC_PATH.read_text())
    assert document["info"]["title"] == "Infobip OpenAPI Specification"
    assert document["info"]["version"] == "3.210.0"
    # Reducing again changes nothing: every $ref and discriminator target is inside.
    assert reduce(document) == document


def test_no_simulator_module_decides_validity_with_callbridge_models() -> None:
    """A simulator that validates with the client's own models cannot catch their bugs."""
    banned = {"callbridge.shared.infobip_calls", "callbridge.shared.infobip_events",
              "callbridge.shared.infobip_media", "callbridge.shared.realtime_events"}
    offenders = []
    for path in SIMULATORS.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.name}: {n}" for n in names if n in banned]
    assert offenders == []


def test_what_the_orchestrator_sends_is_valid_for_the_published_spec() -> None:
    spec = published_spec()
    bridge = DialogRequest(
        parent_call_id="c-1",
        child_call_request=ChildCallRequest(
            endpoint=WebsocketEndpoint(websocket_endpoint_config_id="cfg"),
            custom_data={"cbToken": "t", "cbCallId": "c-1"}),
        propagation_options=PropagationOptions(child_call_hangup=False)).to_wire()
    transfer = DialogRequest(
        parent_call_id="c-1",
        child_call_request=ChildCallRequest(endpoint=PhoneEndpoint(phone_number="4412"))
    ).to_wire()
    assert spec.request_problems("POST", "/calls/1/dialogs", bridge) == []
    assert spec.request_problems("POST", "/calls/1/dialogs", transfer) == []
    assert spec.request_problems("POST", "/calls/1/calls/{callId}/hangup",
                                 {"errorCode": "NORMAL_HANGUP"}) == []
    config = MediaStreamConfig(name="callbridge", url="wss://x/media", sample_rate="24000")
    assert spec.request_problems("POST", "/calls/1/media-stream-configs",
                                 config.to_wire()) == []


def test_the_spec_is_stricter_than_our_models_were() -> None:
    spec = published_spec()
    no_type = {"name": "n", "url": "wss://x", "sampleRate": "24000"}
    assert {p.path for p in spec.request_problems(
        "POST", "/calls/1/media-stream-configs", no_type)} == {"type"}
    numeric_rate = {"type": "WEBSOCKET_ENDPOINT", "name": "n", "url": "wss://x",
                    "sampleRate": 24000}
    assert {p.path for p in spec.request_problems(
        "POST", "/calls/1/media-stream-configs", numeric_rate)} == {"sampleRate"}
    untyped_endpoint = {"parentCallId": "c", "childCallRequest": {
        "endpoint": {"websocketEndpointConfigId": "cfg"}}}
    assert {p.path for p in spec.request_problems(
        "POST", "/calls/1/dialogs", untyped_endpoint)} == {"childCallRequest.endpoint.type"}
    assert spec.request_problems("POST", "/calls/1/calls/{callId}/hangup",
                                 {"errorCode": "agent_hangup"})  # not a PublicErrorCode


async def test_a_config_without_type_is_refused_and_recorded() -> None:
    async with InfobipSimulator() as sim, aiohttp.ClientSession() as http:
        async with http.post(sim.base_url + "/calls/1/media-stream-configs", headers=AUTH,
                             json={"name": "n", "url": "wss://x/media"}) as resp:
            assert resp.status == 400
            exc = (await resp.json())["requestError"]["serviceException"]
        assert exc["messageId"] == "BAD_REQUEST" and "type" in exc["validationErrors"]
        assert [r.path for r in sim.invalid_requests] == ["/calls/1/media-stream-configs"]
        assert sim.media_stream_configs == {} and sim.spec_violations == []
        async with http.post(sim.base_url + "/calls/1/media-stream-configs", headers=AUTH,
                             json={"type": "WEBSOCKET_ENDPOINT", "name": "n",
                                   "url": "wss://x/media"}) as resp:
            assert resp.status == 201
            assert (await resp.json())["sampleRate"] == "8000"  # the spec's default


def test_the_simulator_raises_on_its_own_invalid_output() -> None:
    spec = published_spec()
    with pytest.raises(SpecViolation):
        spec.check_response("POST", "/calls/1/dialogs", 201, {"id": 1, "state": "CREATED"})
    with pytest.raises(SpecViolation):  # an undocumented status gets the ApiException schema
        spec.check_response("POST", "/calls/1/dialogs", 503,
                            {"requestError": {"serviceException": {"messageId": 5}}})
    with pytest.raises(SpecViolation):  # the spec documents no 202 here
        spec.check_response("POST", "/calls/1/dialogs", 202, {})
    poster = WebhookPoster(None)
    sender = OrderedSender(poster)
    with pytest.raises(SpecViolation):
        sender.emit({"type": "CALL_TELEPORTED", "properties": {}})
    assert len(poster.spec_violations) == 1
