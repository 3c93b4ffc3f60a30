"""What the simulated caller does: who calls whom, what they say, and when they hang up.

The default policy is a polite caller: wait for the agent's greeting to finish (agent audio,
then >= 800 ms of silence on the playout clock), say the WAV, wait for the agent's reply to
finish the same way, hang up. Every wait is bounded, so a silent agent cannot hold a test.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from callbridge.shared.pcm import read_wav, resample
from callbridge.simulators import ASSETS_DIR

from .media_leg import MediaLeg

HangupPolicy = Literal["after_agent_reply", "fixed"]


@dataclass
class CallScript:
    """One simulated caller. Times in seconds unless the name says `_ms`."""

    caller_wav: Path | str | None = ASSETS_DIR / "caller_order_status.wav"
    from_number: str = "447700900123"
    to_number: str = "442035550100"
    #: PHONE ({phoneNumber}) or WEBRTC ({identity}) caller endpoint.
    endpoint_type: Literal["PHONE", "WEBRTC"] = "PHONE"
    #: "after_agent_reply" (see module doc). A set `hangup_after_s` means "fixed": the caller
    #: still greets and speaks, but hangs up exactly `hangup_after_s` after the call was placed.
    hangup: HangupPolicy = "after_agent_reply"
    hangup_after_s: float | None = None
    #: Hard cap from placement; the caller hangs up then (end_reason "max_duration").
    max_duration_s: float = 60.0
    #: Quiet on the playout clock that means "the agent finished".
    quiet_ms: float = 800.0
    #: Speak anyway when no greeting was heard this long after media connected.
    greeting_timeout_s: float = 8.0
    #: How long to wait for the agent's reply to start after the caller finished.
    reply_timeout_s: float = 20.0
    #: Start speaking this long after the first agent audio, while it still talks (barge-in).
    barge_in_at_ms: float | None = None
    #: DTMF digits to press, (ms after media connected, digit).
    dtmf: list[tuple[float, str]] = field(default_factory=list)
    #: False: a WEBSOCKET dialog "connects" without opening the socket (no gateway needed).
    connect_to_media: bool = True
    #: After a PHONE child (transfer) connects, the caller talks this long and hangs up.
    transfer_talk_s: float = 2.0

    @property
    def policy(self) -> HangupPolicy:
        return "fixed" if self.hangup_after_s is not None else self.hangup

    def endpoint(self) -> dict[str, str]:
        """Caller endpoint object (reference: PHONE {phoneNumber}, WEBRTC {identity})."""
        if self.endpoint_type == "WEBRTC":
            return {"type": "WEBRTC", "identity": self.from_number,
                    "displayName": self.from_number}
        return {"type": "PHONE", "phoneNumber": self.from_number}

    def caller_pcm(self, rate: int) -> bytes:
        """The caller's speech at the media rate (one-shot resample of the whole clip)."""
        if self.caller_wav is None:
            return b""
        pcm, wav_rate = read_wav(self.caller_wav)
        return resample(pcm, wav_rate, rate)


async def _press_digits(leg: MediaLeg, digits: list[tuple[float, str]]) -> None:
    start = time.monotonic()
    for at_ms, digit in sorted(digits):
        delay = start + at_ms / 1000.0 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if leg.closed:
            return
        await leg.send_dtmf(digit)


async def converse(leg: MediaLeg, script: CallScript) -> None:
    """Greeting, caller speech, agent reply — returns when the caller would hang up
    under the after_agent_reply policy. The caller (SimCall) bounds the whole thing."""
    dtmf_task = asyncio.create_task(_press_digits(leg, script.dtmf)) if script.dtmf else None
    try:
        heard = await leg.wait_agent_audio(script.greeting_timeout_s)
        if heard and script.barge_in_at_ms is not None:
            first = leg.marks.get("first_agent_audio", time.time())
            delay = first + script.barge_in_at_ms / 1000.0 - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
        elif heard:
            await leg.wait_agent_quiet(script.quiet_ms, timeout=script.max_duration_s)
        await leg.play()
        spoke_until = leg.marks.get("caller_speech_end", time.time())
        if await leg.wait_agent_audio(script.reply_timeout_s, after=spoke_until):
            await leg.wait_agent_quiet(script.quiet_ms, timeout=script.max_duration_s,
                                       after=spoke_until)
    finally:
        if dtmf_task is not None:
            dtmf_task.cancel()
