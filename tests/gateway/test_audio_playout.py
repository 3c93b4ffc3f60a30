"""Playout pacing and per-item accounting, driven with a hand-held clock."""

from __future__ import annotations

import itertools
import random

import pytest

from callbridge.shared.audio.playout import AgentItem, Playout, truncate_point
from callbridge.shared.audio.tones import hold_sound, notice_tone
from callbridge.shared.infobip_media import frame_bytes
from callbridge.shared.pcm import is_silent, rms

RATE = 8000
FB = frame_bytes(RATE)  # 320


def _speech(frames: int) -> bytes:
    return b"\x10\x27" * (FB // 2) * frames  # constant 10000: loud, not silence


def _run(p: Playout, start: float, until: float, step: float = 0.005) -> list[tuple[float, bytes]]:
    """Call pop_frame every `step` seconds like the gateway's pacer; bounded."""
    sent: list[tuple[float, bytes]] = []
    for i in range(int((until - start) / step) + 1):
        now = start + i * step
        for _ in range(4):
            frame = p.pop_frame(now)
            if frame is None:
                break
            sent.append((now, frame))
    return sent


def test_frame_bytes_per_rate() -> None:
    assert [frame_bytes(r) for r in (8000, 16000, 24000, 32000, 48000)] == [320, 640, 960,
                                                                           1280, 1920]


def test_idle_stream_sends_silence_at_real_time() -> None:
    p = Playout(RATE)
    sent = _run(p, 0.0, 1.0)
    assert 49 <= len(sent) <= 51  # 50 frames a second, steady
    assert all(f == bytes(FB) for _, f in sent)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(sent)]
    assert max(gaps) <= 0.025 + 1e-9  # quantised to the pacer's 5 ms tick
    assert p.late_frames == 0  # ...but the receiver never runs dry


def test_first_frame_of_a_burst_takes_the_next_grid_slot() -> None:
    p = Playout(RATE)
    _run(p, 0.0, 0.5)  # steady silence on the grid 0, 20, 40 ... 500 ms
    now = 0.5031  # audio arrives between two slots
    assert p.push(_speech(10), "item_a") is True
    # The silence frame sent at 500 ms sounds until 525 ms: sending now would not be heard
    # sooner, and would leave a two-frame hole at the receiver when the burst ends.
    assert now < p.next_due() <= 0.520
    assert p.pop_frame(now) is None
    frame = p.pop_frame(0.520)
    assert frame is not None and not is_silent(frame)
    assert p.lead(0.520) <= 0.020 + 0.005 + 1e-9


def test_first_frame_of_a_call_leaves_at_once() -> None:
    p = Playout(RATE)
    assert p.push(_speech(3), "item_a") is True
    assert p.next_due() == float("-inf")
    frame = p.pop_frame(0.0031)
    assert frame is not None and not is_silent(frame)
    assert p.pop_frame(0.0031) is None  # the grid starts here: next slot 20 ms later
    assert p.next_due() == pytest.approx(0.0231, abs=1e-5)


def test_audio_is_paced_and_accounted_per_item() -> None:
    p = Playout(RATE)
    p.push(_speech(25), "item_a")  # 500 ms
    sent = _run(p, 0.0, 0.3)
    audio = [f for _, f in sent if not is_silent(f)]
    # 300 ms of wall time: the receiver's cushion is at most 2 frames + a tick ahead.
    assert 15 <= len(audio) <= 18
    assert p.sent_ms("item_a") == pytest.approx(len(audio) * 20)
    assert 0 < p.unplayed_ms("item_a", 0.3) <= 45
    assert p.playing(0.3)


def test_pause_returns_the_lead_to_one_tick() -> None:
    p = Playout(RATE)
    p.push(_speech(5), "a")
    _run(p, 0.0, 0.5)
    assert p.lead(0.5) <= 0.025 + 1e-9
    assert not p.playing(0.6)


def test_clear_drops_queue_and_pad_completes_last_frame() -> None:
    p = Playout(RATE)
    p.push(_speech(3) + b"\x01\x00" * 10, "a")
    assert p.queued_bytes == 3 * FB + 20
    p.pad_item()
    assert p.queued_bytes == 4 * FB
    assert p.clear() == 4 * FB
    assert p.queued_bytes == 0


def test_frames_spanning_two_items_credit_each() -> None:
    p = Playout(RATE)
    p.push(b"\x10\x27" * (FB // 4), "a")  # half a frame
    p.push(b"\x10\x27" * (FB // 4 + FB // 2), "b")  # half + one frame
    _run(p, 0.0, 0.1)
    assert p.sent_ms("a") == pytest.approx(10)
    assert p.sent_ms("b") == pytest.approx(30)
    assert p.last_item == "b"


def test_filler_loops_the_hold_sound() -> None:
    p = Playout(RATE)
    hold = hold_sound(RATE, gap_ms=300)
    p.set_filler(hold)
    sent = _run(p, 0.0, 2.0)
    loud = [f for _, f in sent if not is_silent(f)]
    assert loud, "the hold sound was never played"
    # the longest run of silent frames stays below the gap + a frame
    longest = run = 0
    for _, f in sent:
        run = run + 1 if is_silent(f) else 0
        longest = max(longest, run)
    assert longest * 20 <= 300 + 60
    p.set_filler(None)
    assert all(f == bytes(FB) for _, f in _run(p, 2.005, 2.2))


def test_late_pacer_is_counted() -> None:
    p = Playout(RATE)
    p.push(_speech(10), "a")
    assert p.pop_frame(0.0) is not None
    assert p.pop_frame(0.02) is not None
    assert p.pop_frame(0.2) is not None  # 155 ms after the receiver ran dry
    assert p.late_frames == 1 and p.underruns == 1


# Regression (bench.gateway at 25 calls on a quiet box: ~1 gap of 40-45 ms per call per 15 s
# at the legs, LATE_GAP_MS is 40): audio was sent a frame + a tick ahead and filler a tick
# ahead, so every end of an item and every barge-in clear left two frame periods + tick jitter
# between two frames. One fixed grid per call now carries audio and filler alike.


def _jittery_run(p: Playout, start: float, until: float, actions: dict[int, str],
                 seed: int) -> list[tuple[float, bool]]:
    """The hub's 5 ms ticks with up to 2 ms of wake-up lag; `actions` by tick index."""
    rng = random.Random(seed)
    sent: list[tuple[float, bool]] = []
    for i in range(int((until - start) / 0.005) + 1):
        now = start + i * 0.005 + rng.uniform(0.0, 0.002)
        act = actions.get(i)
        if act == "speak":
            p.push(_speech(rng.randint(3, 30)) + b"\x10\x27" * rng.randint(1, FB // 2 - 1), "it")
            p.pad_item()
        elif act == "clear":
            p.clear()
        elif act == "hold":
            p.set_filler(hold_sound(RATE, gap_ms=100))
        elif act == "unhold":
            p.set_filler(None)
        for _ in range(4):
            frame = p.pop_frame(now)
            if frame is None:
                break
            sent.append((now, not is_silent(frame)))
    return sent


@pytest.mark.parametrize("seed", range(5))
def test_grid_is_unbroken_across_bursts_clears_and_filler(seed: int) -> None:
    p = Playout(RATE)
    rng = random.Random(seed)
    actions: dict[int, str] = {}
    for i in range(40, 1900, 97):  # ~ every half second, at every phase of the grid
        actions[i + rng.randint(0, 3)] = "speak"
        actions[i + rng.randint(20, 60)] = rng.choice(["clear", "speak", "hold", "unhold"])
    sent = _jittery_run(p, 0.0, 10.0, actions, seed)
    assert sum(1 for _, voiced in sent if voiced) > 100  # bursts and filler both ran
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(sent)]
    assert max(gaps) <= 0.020 + 0.005 + 0.002 + 1e-9  # one slot + tick + lag, never two
    # ...and the grid never moved: frame k leaves within a tick + lag of slot k.
    t0 = sent[0][0]
    assert all(0 <= t - (t0 + 0.020 * k) <= 0.007 + 1e-6 for k, (t, _) in enumerate(sent))
    assert p.late_frames == 0


def test_a_late_pacer_catches_up_on_the_same_grid() -> None:
    p = Playout(RATE)
    p.push(_speech(20), "a")
    assert p.pop_frame(0.0) is not None  # grid: 0, 20, 40 ... ms
    assert p.pop_frame(0.02) is not None
    sent = _run(p, 0.085, 0.2)  # the loop stalled from 20 to 85 ms
    # 40, 60 and 80 were due: sent back to back, then 100, 120 ... on the same grid.
    assert [round(t, 3) for t, _ in sent[:5]] == [0.085, 0.085, 0.085, 0.1, 0.12]
    assert p.late_frames == 1 and p.underruns == 1  # one gap heard, counted once
    sent = _run(p, 0.4, 0.5)  # a stall longer than MAX_CATCHUP_S starts a new grid
    assert [round(t, 3) for t, _ in sent[:3]] == [0.4, 0.42, 0.44]
    assert p.late_frames == 2


@pytest.mark.parametrize(
    ("sent", "unplayed", "generated", "allowance", "finished", "expected"),
    [
        (1000, 30, 5000, 60, False, 970),    # normal: heard = sent - what is still buffered
        (1000, 200, 5000, 60, False, 940),   # never subtract more than the allowance
        (8160, 0, 6350, 60, False, 6350),    # never beyond generated (the classic bug)
        (0, 0, 500, 60, False, None),        # nothing played: skip
        (20, 40, 500, 60, False, None),      # nothing heard yet: skip
        (1000, 0, 1000, 60, True, None),     # playback finished: skip
    ],
)
def test_truncate_point(sent: float, unplayed: float, generated: float, allowance: float,
                        finished: bool, expected: int | None) -> None:
    assert truncate_point(sent, unplayed, generated, allowance, finished) == expected


def test_agent_item_defaults() -> None:
    item = AgentItem("i", "r")
    assert item.generated_ms == 0.0 and not item.audio_done


def test_tones_are_audible_and_frame_friendly() -> None:
    for rate in (8000, 16000, 24000, 32000, 48000):
        assert rms(notice_tone(rate)) > 500
        assert len(hold_sound(rate)) % 2 == 0
