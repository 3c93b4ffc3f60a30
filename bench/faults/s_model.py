"""Scenario 4: the model socket dropped (TCP reset, no close frame), then session_expired.

Invariant: for every call live at a fault, the caller hears no silence longer than
HOLD_LIMIT_MS (+ one pacing tolerance) from the fault until the agent is heard again, and the
conversation resumes with its context — the simulator's new session received the transcript
so far as `conversation.item.create` items before its `response.create` — or, when the model
cannot come back, the spoken fallback plays and the call is transferred or hung up.
"""

from __future__ import annotations

import time

from bench.faults.drive import finish_all, place_calls, script, wait_for
from bench.faults.report import Row
from bench.faults.runner import Ctx
from bench.faults.silence import first_audible_after, max_frame_gap, silence_in
from bench.faults.stack import FaultOptions, decode
from callbridge.shared import redis_keys
from callbridge.simulators.infobip import SimCall
from callbridge.simulators.openai_realtime import RealtimeSimulator, SimSession

HOLD_LIMIT_MS = 1500
TOLERANCE_MS = 100  # a frame period plus pacer ticks and event-loop lag on a shared box


def _answering(call: SimCall) -> bool:
    """The agent has started answering the caller (so history holds both turns)."""
    end = call.timeline.get("caller_speech_end")
    return bool(end and call.leg and first_audible_after(call.leg, end) is not None)


def _reseeded(session: SimSession) -> bool:
    """Context items arrived before the first response.create of this session."""
    items = 0
    for evt in session.received:
        if evt.get("type") == "conversation.item.create":
            items += 1
        elif evt.get("type") == "response.create":
            return items > 0
    return False


async def _fault(rt: RealtimeSimulator, kind: str, n: int, timeout: float
                 ) -> tuple[float, list[SimSession], bool]:
    """Inject `kind`; wait for `n` new sessions to ask for a response (bounded)."""
    t = time.time()
    if kind == "drop":
        await rt.drop_all()
    else:
        await rt.expire_all()

    def fresh() -> list[SimSession]:
        return [s for s in rt.sessions if s.connected_at >= t and s.responses]
    ok = await wait_for(lambda: len(fresh()) >= n, timeout)
    return t, fresh(), ok


async def drop_and_expire(ctx: Ctx, row: Row) -> None:
    n = ctx.size(3, 8)
    hangup = ctx.sizef(18, 30)
    reconnect_s = 6.0
    opts = FaultOptions(env={"HOLD_LIMIT_MS": str(HOLD_LIMIT_MS),
                             "MODEL_RECONNECT_TIMEOUT_S": str(reconnect_s)})
    async with ctx.stack("model-faults", opts) as stack:
        sim, rt = stack.infobip, stack.openai
        assert sim is not None and rt is not None
        calls = await place_calls(sim, n, lambda: script(hangup_after_s=hangup), rate=4)
        live = await wait_for(lambda: all(_answering(c) for c in calls), 25)
        row.check("calls reached the agent's answer", live,
                  str([sorted(c.timeline) for c in calls if not _answering(c)][:1]))
        windows: list[tuple[str, float, float]] = []
        for kind in ("drop", "expire"):
            t, fresh, ok = await _fault(rt, kind, n, reconnect_s + 6)
            row.faults += 1
            row.check(f"{kind}: every call reconnected", ok,
                      f"{len(fresh)} of {n} new sessions asked for a response")
            row.check(f"{kind}: context re-seeded", bool(fresh) and all(map(_reseeded, fresh)),
                      f"{sum(map(_reseeded, fresh))} of {len(fresh)} new sessions got items")
            back = max((s.responses[0].created_at for s in fresh), default=t + reconnect_s)
            windows.append((kind, t, back + 1.0))
            row.recovery_s = round(max(row.recovery_s or 0.0, back - t), 2)
            # Let the resumed answer play before the next fault (bounded).
            await wait_for(lambda b=back: all(  # type: ignore[misc]
                c.leg is None or c.leg.closed or first_audible_after(c.leg, b + 0.5)
                for c in calls), 10)
        unfinished = await finish_all(calls, hangup + 30)
        ended = {c.call_id: decode(await stack.redis_client.hget(
            redis_keys.session_record(c.call_id), "end_reason") or b"") for c in calls}
    row.calls = n
    row.events = sum(len(s.received) + len(s.sent) for s in rt.sessions)
    silences: list[float] = []
    for c in calls:
        if c.leg is None:
            continue
        closed = c.leg.frames[-1][0] if c.leg.frames else time.time()
        for _, start, end in windows:
            silences.append(silence_in(c.leg, start, min(end, closed)))
    row.silence_ms = max(silences, default=None)
    fallback = [c for c in calls if ended.get(c.call_id) == "model_failed"]
    cut = [c for c in calls if c.end_reason != "caller_hangup" and c not in fallback]
    row.cut = len(cut) + len(unfinished)
    row.lost, row.duplicated = None, None
    row.notes.append(f"session end reasons {ended}; longest frame gap "
                     f"{max((max_frame_gap(c.leg) for c in calls if c.leg), default=0)} ms")
    row.check(f"no silence over the hold limit ({HOLD_LIMIT_MS} ms)",
              row.silence_ms is not None and row.silence_ms <= HOLD_LIMIT_MS + TOLERANCE_MS,
              f"longest {row.silence_ms} ms; per call/fault {silences}")
    row.check("calls resumed or fell back cleanly", row.cut == 0,
              str([(c.call_id[:8], c.end_reason) for c in cut]))

