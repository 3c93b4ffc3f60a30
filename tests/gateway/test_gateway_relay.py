"""The relay end to end on real sockets: rates, GA session.update, greeting, frames."""

from __future__ import annotations

import pytest

from callbridge.services.media_gateway.server import Gateway
from callbridge.shared.infobip_media import SUPPORTED_RATES, frame_bytes
from callbridge.shared.pcm import is_silent, rms
from callbridge.simulators.openai_realtime import RealtimeSimulator
from tests.gateway.fixtures import GatewayFactory, LegFactory, caller_speech


@pytest.mark.parametrize("rate", sorted(SUPPORTED_RATES))
async def test_agent_audio_reaches_the_caller_at_the_leg_rate(
        rate: int, make_gateway: GatewayFactory, open_leg: LegFactory,
        rt_sim: RealtimeSimulator) -> None:
    gw: Gateway = await make_gateway()
    leg = await open_leg(gw, rate)
    assert await leg.wait_agent_audio(timeout=15), "no agent audio reached the caller"
    assert await leg.wait_agent_quiet(quiet_ms=300, timeout=20)
    heard = leg.received_pcm()
    assert rms(heard) > 500, f"agent audio too quiet at {rate} Hz (rms {rms(heard):.0f})"
    sizes = {len(f) for _, f in leg.frames}
    assert sizes == {frame_bytes(rate)}, f"frames of {sizes} bytes at {rate} Hz"
    # The greeting was the session's first response, asked for by the gateway.
    session = rt_sim.sessions[0]
    update = session.session_updates[0]
    assert update["type"] == "realtime"
    assert update["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert update["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert update["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert update["audio"]["input"]["transcription"] == {"model": "gpt-4o-transcribe"}
    assert update["audio"]["output"]["voice"] == "marin"
    assert {t["name"] for t in update["tools"]} == {"hang_up", "transfer_to_human"}
    assert session.headers["authorization"] == "Bearer sk-sim"
    assert "openai-beta" not in session.headers
    assert session.model == "gpt-realtime"
    received_types = [e["type"] for e in session.received]
    assert received_types[:2] == ["session.update", "response.create"]
    assert all("event_id" in e for e in session.received
               if e["type"] != "input_audio_buffer.append")
    await leg.hangup()


async def test_caller_speech_reaches_the_model_and_gets_an_answer(
        make_gateway: GatewayFactory, open_leg: LegFactory, rt_sim: RealtimeSimulator) -> None:
    gw = await make_gateway()
    leg = await open_leg(gw, 16000, autoplay=False)
    assert await leg.wait_agent_quiet(quiet_ms=300, timeout=20)  # the greeting, heard out
    await leg.play(caller_speech(16000))
    session = rt_sim.sessions[0]
    await session.wait_for("input_audio_buffer.speech_started", timeout=15, direction="sent")
    await session.wait_for("response.done", timeout=30, direction="sent", nth=2)
    assert session.appended_ms > 4000  # the caller's 4.3 s, resampled to 24 kHz
    assert await leg.wait_agent_quiet(quiet_ms=300, timeout=30)
    assert not is_silent(leg.received_pcm())
    assert session.truncate_errors == []
    await leg.hangup()
