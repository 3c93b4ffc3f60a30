"""Barge-in (services/media_gateway/bargein.py; OpenAI's Realtime conversations guide,
https://platform.openai.com/docs/guides/realtime-conversations): clear, drop, truncate at
what was heard (never beyond what was generated), drop the cancelled response's later
deltas."""

from __future__ import annotations

from typing import Any, cast

import pytest

from callbridge.services.media_gateway.bargein import BargeIn
from callbridge.services.media_gateway.caller_output import CLEAR, CallerOutput
from callbridge.services.media_gateway.model_link import ModelLink
from callbridge.services.media_gateway.pacer import PacerHub, Sender
from callbridge.services.media_gateway.ws_fastpath import MediaConnection
from callbridge.shared.audio.playout import Playout
from callbridge.shared.pcm import is_silent
from callbridge.shared.profiles import AgentProfile, ProfileBook
from callbridge.simulators.openai_realtime import RealtimeSimulator
from tests.gateway.fixtures import (
    GatewayFactory,
    LegFactory,
    caller_speech,
)
from tests.waiting import wait_until


async def test_caller_interrupts_the_agent(make_gateway: GatewayFactory, open_leg: LegFactory,
                                           rt_sim: RealtimeSimulator) -> None:
    gw = await make_gateway()
    leg = await open_leg(gw, 16000, autoplay=False)
    assert await leg.wait_agent_audio(timeout=15)  # the greeting has started
    first_voice = leg.marks["first_agent_audio"]
    await leg.play(caller_speech(16000)[: 16000 * 2 * 2])  # 2 s of speech over the greeting
    session = rt_sim.sessions[0]
    await session.wait_for("input_audio_buffer.speech_started", timeout=15, direction="sent")
    await wait_until(lambda: leg.clears, timeout=10, what="a clear at the leg")
    truncate = await session.wait_for("conversation.item.truncate", timeout=10,
                                      direction="received")
    await wait_until(lambda: session.truncates, timeout=10, what="the truncate recorded")
    attempt = session.truncates[0]
    assert session.truncate_errors == []
    assert attempt["ok"] is True
    assert 0 < truncate["audio_end_ms"] <= attempt["generated_ms"]
    # What the caller heard of the greeting: from its first audible frame to the clear.
    heard_ms = (leg.clears[0] - first_voice) * 1000.0
    assert abs(truncate["audio_end_ms"] - heard_ms) < 400, (truncate, heard_ms)
    assert session.cancels and session.cancels[0]["reason"] == "turn_detected"
    # No audio of the cancelled greeting after the clear (the answer comes after the turn).
    await session.wait_for("input_audio_buffer.speech_stopped", timeout=15, direction="sent")
    stopped_at = leg.marks.get("caller_speech_end", leg.clears[0])
    stale = [t for t, f in leg.frames if leg.clears[0] < t < stopped_at and not is_silent(f)]
    assert stale == [], f"{len(stale)} audible frames of the cancelled response after clear"
    assert len(leg.clears) == 1
    await leg.hangup()


async def test_no_clear_or_truncate_when_the_agent_is_quiet(
        make_gateway: GatewayFactory, open_leg: LegFactory, rt_sim: RealtimeSimulator) -> None:
    """Playback had finished (the greeting was heard out): nothing to interrupt."""
    gw = await make_gateway()
    leg = await open_leg(gw, 24000, autoplay=False)
    # 1 s: the greeting's clip ends in ~400 ms of silence that is still its audio
    assert await leg.wait_agent_quiet(quiet_ms=1000, timeout=20)
    await leg.play(caller_speech(24000))
    session = rt_sim.sessions[0]
    await session.wait_for("input_audio_buffer.speech_stopped", timeout=15, direction="sent")
    assert leg.clears == []
    assert session.truncates == []
    await leg.hangup()


async def test_nothing_played_yet_means_no_truncate(
        make_gateway: GatewayFactory, open_leg: LegFactory, rt_sim: RealtimeSimulator) -> None:
    """No greeting: the caller speaks first; there is no agent item to truncate."""
    book = ProfileBook(profiles={"quiet": AgentProfile(greeting=None)},
                       routes={"default": "quiet"})
    gw = await make_gateway(profiles=book)
    leg = await open_leg(gw, 8000, caller_speech(8000), profile="quiet")
    session = rt_sim.sessions[0] if rt_sim.sessions else (await rt_sim.wait_for_sessions(1))[0]
    await session.wait_for("input_audio_buffer.speech_started", timeout=15, direction="sent")
    await session.wait_for("response.done", timeout=30, direction="sent")
    assert [e["type"] for e in session.received][:1] == ["session.update"]
    assert not any(e["type"] == "response.create" for e in session.received)
    assert leg.clears == [] and session.truncates == []
    assert await leg.wait_agent_audio(timeout=15)  # the agent answered the caller
    await leg.hangup()


# The procedure on its own, with recording stand-ins for the sockets --------------------------

class _Recorder:
    def __init__(self) -> None:
        self.texts: list[bytes] = []
        self.events: list[dict[str, Any]] = []

    def send_text(self, text: bytes, now: float = 0.0) -> bool:
        self.texts.append(text)
        return True

    def send(self, event: dict[str, Any]) -> bool:
        self.events.append(event)
        return True


def _barge(rate: int = 8000) -> tuple[BargeIn, Playout, _Recorder]:
    """A barge-in on a real caller output whose socket writes are recorded."""
    rec = _Recorder()
    output = CallerOutput(cast(MediaConnection, rec), rate, PacerHub())
    output.sender = cast(Sender, rec)
    barge = BargeIn(output, cast(ModelLink, rec), allowance_ms=60)
    return barge, output.playout, rec


async def test_queued_but_unheard_audio_is_cleared_without_truncate() -> None:
    barge, playout, rec = _barge()
    barge.item("item_1", "resp_1").generated_ms = 2000
    playout.push(b"\x10\x27" * 1600, "item_1")  # 200 ms queued, nothing sent yet
    outcome = barge.on_speech_started(0.0, "resp_1")
    assert outcome.cleared and outcome.audio_end_ms is None
    assert rec.texts == [CLEAR] and rec.events == []
    assert playout.queued_bytes == 0
    assert barge.is_cancelled("resp_1")


@pytest.mark.parametrize("generated_ms", [5000.0, 900.0])
async def test_truncate_at_what_was_heard_never_beyond_generated(generated_ms: float) -> None:
    barge, playout, rec = _barge()
    barge.item("item_1", "resp_1").generated_ms = generated_ms
    playout.push(b"\x10\x27" * 16000, "item_1")  # 2 s queued at 8 kHz
    now = 0.0
    for _ in range(200):  # 1 s of pacing at 5 ms ticks
        while playout.pop_frame(now) is not None:
            pass
        now += 0.005
    sent = playout.sent_ms("item_1")
    outcome = barge.on_speech_started(now, "resp_1")
    assert outcome.cleared and outcome.audio_end_ms is not None
    assert outcome.audio_end_ms <= generated_ms
    if generated_ms > sent:
        assert sent - 60 <= outcome.audio_end_ms < sent  # minus the receiver's lead
    else:
        assert outcome.audio_end_ms == int(generated_ms)
    assert rec.events == [{**rec.events[0], "type": "conversation.item.truncate",
                           "item_id": "item_1", "audio_end_ms": outcome.audio_end_ms}]


async def test_disabled_barge_in_does_nothing() -> None:
    barge, playout, rec = _barge()
    barge.enabled = False
    playout.push(b"\x10\x27" * 1600, "item_1")
    assert not barge.on_speech_started(0.0, "resp_1").cleared
    assert rec.texts == [] and playout.queued_bytes == 3200
