"""Scenario 4: the model socket dropped (TCP reset, no close frame), then session_expired.

Invariant: for every call live at a fault, the caller hears no silence longer than
GATEWAY_HOLD_LIMIT_MS (+ one pacing tolerance) from the fault until the agent is heard again, and
the conversation resumes with its context — the simulator's new session received the transcript so
far as `conversation.item.create` items before its `response.create` — or, when the model cannot
come back, the spoken fallback plays and the call is transferred or hung up. """

from __future__ import annotations

import time
from pathlib import Path

from bench.faults.drive import finish_all, place_calls, script, wait_async, wait_for
from bench.faults.metrics_scrape import gateway_metrics
from bench.faults.report import Row
from bench.faults.runner import Ctx
from bench.faults.silence import first_audible_after, max_frame_gap, silence_in
from bench.faults.stack import OPENAI_KEY, FaultOptions, decode
from callbridge.shared import redis_keys
from callbridge.simulators.infobip import InfobipSimulator, SimCall
from callbridge.simulators.openai_realtime import RealtimeSimulator, SimSession

GATEWAY_HOLD_LIMIT_MS = 1500
TOLERANCE_MS = 100  # a frame period plus pacer ticks and event-loop lag on a shared box


def _answering(call: SimCall) -> bool:
    """The agent has started answering the caller (so history holds both turns)."""
    end = call.timeline.get("caller_speech_end")
    return bool(end and call.leg and first_audible_after(call.leg, end) is not None)


async def _answered_calls(sim: InfobipSimulator, row: Row, n: int, hangup: float
                          ) -> list[SimCall]:
    """Place `n` calls and wait (bounded) until each heard the agent answer its caller."""
    calls = await place_calls(sim, n, lambda: script(hangup_after_s=hangup), rate=4)
    live = await wait_for(lambda: all(_answering(c) for c in calls), 25)
    row.check("calls reached the agent's answer", live,
              str([sorted(c.timeline) for c in calls if not _answering(c)][:1]))
    return calls


def reseeded(session: SimSession) -> bool:
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
    opts = FaultOptions(env={"GATEWAY_HOLD_LIMIT_MS": str(GATEWAY_HOLD_LIMIT_MS),
                             "GATEWAY_MODEL_RECONNECT_TIMEOUT_S": str(reconnect_s)})
    async with ctx.stack("model-faults", opts) as stack:
        sim, rt = stack.infobip, stack.openai
        assert sim is not None and rt is not None
        calls = await _answered_calls(sim, row, n, hangup)
        windows: list[tuple[str, float, float]] = []
        for kind in ("drop", "expire"):
            t, fresh, ok = await _fault(rt, kind, n, reconnect_s + 6)
            row.faults += 1
            row.check(f"{kind}: every call reconnected", ok,
                      f"{len(fresh)} of {n} new sessions asked for a response")
            row.check(f"{kind}: context re-seeded", bool(fresh) and all(map(reseeded, fresh)),
                      f"{sum(map(reseeded, fresh))} of {len(fresh)} new sessions got items")
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
    row.check(f"no silence over the hold limit ({GATEWAY_HOLD_LIMIT_MS} ms)",
              row.silence_ms is not None and row.silence_ms <= GATEWAY_HOLD_LIMIT_MS + TOLERANCE_MS,
              f"longest {row.silence_ms} ms; per call/fault {silences}")
    row.check("calls resumed or fell back cleanly", row.cut == 0,
              str([(c.call_id[:8], c.end_reason) for c in cut]))



# Scenario 4b: the primary model endpoint dies for good; calls fail over to the secondary -----

#: The secondary stands in for an Azure OpenAI Realtime deployment: its own key, sent in an
#: `api-key` header, and the model named by `?deployment=` (services/media_gateway/
#: model_endpoints.py). Distinctive, so a leak into any log of the stack is found.
SECONDARY_KEY = "FAULTSECRET-secondary-azure-2b7e91d4c0a8f365"
SECONDARY_DEPLOYMENT = "gpt-realtime-failover"
FAILOVER_WINDOW_S = 2.0  # GATEWAY_MODEL_RECONNECT_TIMEOUT_S: how long the primary is retried


def _keys_kept_apart(primary: RealtimeSimulator, secondary: RealtimeSimulator) -> bool:
    """Each endpoint saw only its own key, in its own header."""
    return all(s.headers.get("authorization") == f"Bearer {OPENAI_KEY}"
               for s in primary.sessions) and all(
        s.headers.get("api-key") == SECONDARY_KEY and "authorization" not in s.headers
        and not any(OPENAI_KEY in v for v in s.headers.values()) for s in secondary.sessions)


def _keys_in_logs(dirs: list[Path]) -> list[str]:
    """Log files (of this scenario's stack) that contain either model key."""
    return [str(p) for d in dirs for p in sorted(d.rglob("*.log"))
            if any(k in p.read_text(errors="replace") for k in (OPENAI_KEY, SECONDARY_KEY))]


async def primary_dies_failover(ctx: Ctx, row: Row) -> None:
    """The primary Realtime endpoint goes away for good mid-call (its server stops: the open
    sockets close with 1001 and new connections are refused). Invariants: every call moves to
    the secondary after GATEWAY_MODEL_RECONNECT_TIMEOUT_S, re-seeded with its conversation
    (items before the first `response.create`); the caller hears no silence over the hold
    limit meanwhile; no call ends on `model_failed` or is cut; each endpoint got only its own
    key and no key reached a log; the gateway counted every failover as `ok`."""
    n = ctx.size(3, 8)
    hangup = ctx.sizef(14, 26)  # calls still live a few seconds after the move
    secondary = RealtimeSimulator(api_key=SECONDARY_KEY, speed=4.0, keep_sessions=200,
                                  auth="api-key")
    await secondary.start()
    opts = FaultOptions(env={
        "GATEWAY_HOLD_LIMIT_MS": str(GATEWAY_HOLD_LIMIT_MS),
        "GATEWAY_MODEL_RECONNECT_TIMEOUT_S": str(FAILOVER_WINDOW_S),
        "OPENAI_SECONDARY_REALTIME_URL": f"{secondary.url}?deployment={SECONDARY_DEPLOYMENT}",
        "OPENAI_SECONDARY_API_KEY": SECONDARY_KEY, "OPENAI_SECONDARY_AUTH": "api-key",
        "OPENAI_SECONDARY_MODEL": SECONDARY_DEPLOYMENT})
    log_dirs_before = len(ctx.log_dirs)
    try:
        async with ctx.stack("model-failover", opts) as stack:
            sim, rt = stack.infobip, stack.openai
            assert sim is not None and rt is not None
            calls = await _answered_calls(sim, row, n, hangup)
            ctx.phase("primary dies")
            t = time.time()
            await rt.stop()  # for good: nothing listens on its port any more
            row.faults += 1

            def moved() -> list[SimSession]:
                return [s for s in secondary.sessions if s.responses]
            ok = await wait_for(lambda: len(moved()) >= n, FAILOVER_WINDOW_S + 10)
            fresh = moved()
            row.check("every call moved to the secondary", ok,
                      f"{len(fresh)} of {n} secondary sessions asked for a response")
            row.check("context re-seeded on the secondary",
                      bool(fresh) and all(map(reseeded, fresh)),
                      f"{sum(map(reseeded, fresh))} of {len(fresh)} sessions got items first")
            row.check("secondary addressed by its deployment",
                      all(s.model == SECONDARY_DEPLOYMENT for s in secondary.sessions),
                      str({s.model for s in secondary.sessions}))
            back = max((s.responses[0].created_at for s in fresh),
                       default=t + FAILOVER_WINDOW_S)
            row.recovery_s = round(back - t, 2)
            # The agent is heard again, from the secondary: audio after its first response
            # was created is the agent's (the hold sound stopped when the socket opened).
            heard = await wait_for(lambda: all(
                c.leg is not None and first_audible_after(c.leg, back + 0.2) is not None
                for c in calls), 10)
            row.check("agent heard again on every call", heard, str(
                [c.call_id[:8] for c in calls
                 if c.leg is None or first_audible_after(c.leg, back + 0.2) is None]))
            counted = {dict(labels)["outcome"]: value for (name, labels), value in
                       (await gateway_metrics(stack.port_of("gateway-1"))).items()
                       if name == "callbridge_gateway_model_failovers_total"}
            unfinished = await finish_all(calls, hangup + 30)
            ended: dict[str, str] = {}

            async def recorded() -> bool:  # the gateway writes it just after the leg closes
                for c in calls:
                    ended[c.call_id] = decode(await stack.redis_client.hget(
                        redis_keys.session_record(c.call_id), "end_reason") or b"")
                return all(ended.values())
            await wait_async(recorded, 5)
    finally:
        await secondary.stop()
    row.calls = n
    row.events = sum(len(s.received) + len(s.sent) for s in (*rt.sessions, *secondary.sessions))
    silences = [silence_in(c.leg, t, min(back + 1.0, c.leg.frames[-1][0] if c.leg.frames
                                         else time.time()))
                for c in calls if c.leg is not None]
    row.silence_ms = max(silences, default=None)
    failed = [c for c in calls if ended.get(c.call_id) == "model_failed"]
    cut = [c for c in calls if c.end_reason != "caller_hangup"]
    row.cut = len(cut) + len(unfinished)
    row.lost, row.duplicated = None, None
    row.notes.append(f"failovers {counted}; session end reasons {ended}")
    row.check(f"no silence over the hold limit ({GATEWAY_HOLD_LIMIT_MS} ms)",
              row.silence_ms is not None and row.silence_ms <= GATEWAY_HOLD_LIMIT_MS + TOLERANCE_MS,
              f"longest {row.silence_ms} ms; per call {silences}")
    row.check("no call fell back or was cut", all(ended.values()) and not failed
              and row.cut == 0,
              str([(c.call_id[:8], c.end_reason, ended.get(c.call_id)) for c in cut + failed]))
    row.check("failovers counted ok", counted.get("ok") == n and not counted.get("failed"),
              str(counted))
    row.check("each endpoint got only its own key", _keys_kept_apart(rt, secondary))
    leaked = _keys_in_logs(ctx.log_dirs[log_dirs_before:])
    row.check("no model key in any log", not leaked, str(leaked[:3]))
