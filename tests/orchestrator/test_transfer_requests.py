"""Transfers as the Calls API spec writes them: digit-only numbers, the called number as
caller ID, ringback for the caller; and the Infobip simulator judging PHONE children with
the published spec (docs/protocol-assumptions.md, "Transfers")."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from pydantic import ValidationError

from callbridge.services.call_orchestrator.actions import build_transfer_dialog
from callbridge.shared.infobip_calls import (
    PropagationOptions,
    RingbackGeneration,
    wire_phone_number,
)
from callbridge.shared.profiles import load_profiles
from callbridge.simulators.infobip import InfobipSimulator
from callbridge.simulators.infobip.spec_validation import published_spec

AUTH = {"Authorization": "App sim-infobip-key"}


@pytest.mark.parametrize(("written", "sent"), [
    ("441134960000", "441134960000"),
    ("+441134960000", "441134960000"),
    ("+44 (113) 496-0000", "441134960000"),
    (" 41 79 302 67 27 ", "41793026727"),
    ("112", "112"),
])
def test_profile_transfer_numbers_load_as_digits(tmp_path: Path, written: str,
                                                 sent: str) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text(f'[profiles.support]\ntransfer_number = "{written}"\n')
    assert load_profiles(path).profiles["support"].transfer_number == sent


@pytest.mark.parametrize("written", [
    "+44 abc", "44.113.496", "12", "1" * 21, "+", "*123#",
    "\uff14\uff14\uff11\uff11\uff13",  # full-width digits: not what the spec writes
])
def test_a_transfer_number_that_is_not_one_refuses_to_load(tmp_path: Path,
                                                           written: str) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text(f'[profiles.support]\ntransfer_number = "{written}"\n')
    with pytest.raises(ValidationError) as raised:
        load_profiles(path)
    text = str(raised.value)
    assert "profiles.support.transfer_number" in text and "3 to 20 digits" in text


def test_an_empty_transfer_number_means_none(tmp_path: Path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text('[profiles.support]\ntransfer_number = ""\n')
    assert load_profiles(path).profiles["support"].transfer_number is None


def test_transfer_body_is_the_spec_s_and_valid_for_it() -> None:
    body = build_transfer_dialog("c-1", "441134960000", "+44 20 3555 0100").to_wire()
    assert body == {
        "parentCallId": "c-1",
        "childCallRequest": {"endpoint": {"type": "PHONE", "phoneNumber": "441134960000"},
                             "from": "442035550100"},
        "propagationOptions": {"ringbackGeneration": {"enabled": True}}}
    assert published_spec().request_problems("POST", "/calls/1/dialogs", body) == []


@pytest.mark.parametrize("called", [None, "", "agent-webrtc-identity"])
def test_no_from_without_a_called_phone_number(called: str | None) -> None:
    body = build_transfer_dialog("c-1", "441134960000", called).to_wire()
    assert "from" not in body["childCallRequest"]
    assert published_spec().request_problems("POST", "/calls/1/dialogs", body) == []


def test_ringing_and_ringback_cannot_both_be_on() -> None:
    """The spec: childCallRinging "Cannot be `true` when `ringbackGeneration` is enabled"."""
    with pytest.raises(ValidationError):
        PropagationOptions(child_call_ringing=True,
                           ringback_generation=RingbackGeneration(enabled=True))


def test_wire_phone_number_keeps_digits_only() -> None:
    assert wire_phone_number("+1 (555) 010-9999") == "15550109999"
    assert wire_phone_number("sip:bob@example.com") is None


async def test_the_simulator_judges_phone_children_with_the_spec() -> None:
    """PHONE children are covered by the simulator's request validation (the spec's
    CallEndpoint discriminator maps PHONE to PhoneEndpoint, which requires phoneNumber;
    DialogPropagationOptions types ringbackGeneration.enabled as a boolean)."""
    bad = [
        ({"type": "PHONE"}, {}, "childCallRequest.endpoint.phoneNumber"),
        ({"type": "PHONE", "phoneNumber": "441134960000"},
         {"ringbackGeneration": {"enabled": "yes"}},
         "propagationOptions.ringbackGeneration.enabled"),
    ]
    async with InfobipSimulator() as sim, aiohttp.ClientSession() as http:
        for endpoint, propagation, field in bad:
            body = {"parentCallId": "c-1", "childCallRequest": {"endpoint": endpoint},
                    "propagationOptions": propagation}
            async with http.post(sim.base_url + "/calls/1/dialogs", headers=AUTH,
                                 json=body) as resp:
                assert resp.status == 400
                exc = (await resp.json())["requestError"]["serviceException"]
            assert field in exc["validationErrors"]
        assert len(sim.invalid_requests) == 2 and sim.spec_violations == []
