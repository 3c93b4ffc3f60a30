"""Re-bridge: a caller whose media gateway was lost gets a new media dialog, conversation kept.

The caller's own call outlives its media leg (the dialog is made with `childCallHangup:
false`, bridge.py), the conversation is in Redis (the gateway's transcript stream) and the
gateway knows how to re-seed a fresh Realtime socket from it. So a lost gateway is a pause
behind the hold sound, not the end of the call.

Two signals start it, and both enqueue the same job id (`rebridge_call:<call>:<generation>`),
so they make one job (docs/protocol-assumptions.md, "Re-bridging after a lost gateway"):
- handlers.py: DIALOG_FINISHED of the call's current media dialog while the call is up,
  nobody asked for a hang-up or transfer, and the gateway did not end its session (it was
  killed, its host vanished, its socket broke): Infobip's signal, usually within tens of ms;
- gateway_watch.py: the gateway's heartbeat stopped changing (a frozen process or a host
  cut off keeps its sockets open, so Infobip says nothing).

Each step may run again (a retried job, a second orchestrator, a replay) without harm:
1. **Fence.** One script moves the call record's `media_gen` from g to g+1, only from g and
   only while the call is up and not being ended or transferred; it counts the re-bridge and
   remembers the fenced dialog, its media leg and its gateway. Every session-record write of
   a gateway is conditional on its generation (the gateway's state.py), and a gateway that
   wakes from a freeze checks its calls' generations before it sends another frame (pacer.py),
   so the old gateway can no longer reach the caller or the records.
2. **Old leg hung up** at Infobip (POST /calls/1/calls/{child}/hangup; one already gone is
   fine): never two live media legs for one call.
3. **New dialog**, claimed per generation (`redis_keys.dialog_claim(call, g+1)`) exactly as the
   first one, with a fresh one-time token marked `resume` (shared/media_tokens.py).
4. **Bounded.** Past ORCHESTRATOR_MAX_REBRIDGES, or when the platform refuses the new dialog
   (a 4xx: that a parent may get a second dialog after its first one finished is inferred,
   not published), the caller is transferred or hung up as before (same job ids).
"""

from __future__ import annotations

import logging

from callbridge.shared import redis_keys
from callbridge.shared.jobs import HANGUP_CALL, REBRIDGE_CALL, TRANSFER_CALL, job_id
from callbridge.shared.redis_values import as_text, epoch_ms_text

from . import call_record
from .actions import transfer_number_for
from .bridge import build_media_dialog, store_media_token
from .calls_api import ApiError
from .dialogs import claim_or_resolve, post_dialog
from .metrics import REBRIDGES
from .runtime import Runtime

log = logging.getLogger(__name__)

#: Moves `media_gen` g -> g+1 (see the module docstring). KEYS[1] call record, KEYS[2] the
#: session record (for the fenced gateway's id). ARGV: g, max re-bridges, now (ms), reason,
#: TTL. Returns {outcome, generation}.
_FENCE = """
local v = redis.call('HMGET', KEYS[1], 'state', 'media_gen', 'rebridges', 'transfer_pending',
                     'hangup_requested_at', 'dialog_id', 'child_call_id')
if not v[1] then return {'unknown', '0'} end
if v[1] == 'ended' then return {'ended', '0'} end
if v[4] == '1' or v[5] then return {'ending', '0'} end
local current = tonumber(v[2] or '0')
local from = tonumber(ARGV[1])
if current == from + 1 then return {'fenced', tostring(current)} end
if current ~= from then return {'superseded', tostring(current)} end
local done = tonumber(v[3] or '0')
if done >= tonumber(ARGV[2]) then return {'exhausted', tostring(current)} end
local gateway = redis.call('HGET', KEYS[2], 'gateway_id') or ''
redis.call('HSET', KEYS[1], 'media_gen', tostring(from + 1), 'rebridges', tostring(done + 1),
           'state', 'rebridging', 'state_rank', '3',
           'rebridge_started_at', ARGV[3], 'rebridge_reason', ARGV[4],
           'fenced_gateway', gateway, 'fenced_dialog_id', v[6] or '',
           'fenced_child_call_id', v[7] or '')
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {'fenced', tostring(from + 1)}
"""


def media_generation(record: dict[str, str]) -> int:
    """The call's newest media generation (fenced or not); 0 before any re-bridge."""
    return int(record.get("media_gen") or 0)


def dialog_generation(record: dict[str, str]) -> int:
    """The generation the call's current `dialog_id` was made for."""
    return int(record.get("dialog_gen") or 0)


def rebridge_job_id(call_id: str, from_generation: int) -> str:
    return job_id(REBRIDGE_CALL, call_id, str(from_generation))


async def request_rebridge(rt: Runtime, call_id: str, from_generation: int, reason: str) -> bool:
    """Enqueue the re-bridge of `call_id` away from media generation `from_generation`; every
    signal of the same loss names the same job, so they make one."""
    return await rt.enqueue(REBRIDGE_CALL, call_id, str(from_generation), reason,
                            job_id=rebridge_job_id(call_id, from_generation))


async def fall_back(rt: Runtime, call_id: str, reason: str) -> None:
    """What a lost gateway meant before re-bridging: transfer when the profile has a number,
    else hang up (the job ids every other path uses, so nothing is asked twice)."""
    record = await call_record.load(rt.redis, call_id)
    if transfer_number_for(rt, record):
        await rt.enqueue(TRANSFER_CALL, call_id, reason, job_id=job_id(TRANSFER_CALL, call_id))
    else:
        await rt.enqueue(HANGUP_CALL, call_id, reason, job_id=job_id(HANGUP_CALL, call_id))


async def rebridge(rt: Runtime, call_id: str, from_generation: int, reason: str,
                   owner: str) -> str:
    """The job: fence, hang up the old leg, create the new dialog (module docstring).
    Returns the job outcome: ok, resolved (an earlier attempt's dialog found), noop,
    exhausted / refused (fell back to transfer-or-hang-up), gone (the caller left)."""
    fence = await rt.redis.eval(
        _FENCE, 2, redis_keys.call_record(call_id), redis_keys.session_record(call_id),
        str(from_generation), str(rt.settings.orchestrator_max_rebridges), epoch_ms_text(),
        reason, str(redis_keys.CALL_TTL_S))
    outcome, generation = (as_text(x) for x in fence)
    if outcome == "exhausted":
        REBRIDGES.labels("exhausted").inc()
        log.warning("media leg lost (%s) and no re-bridge left (%d allowed): falling back",
                    reason, rt.settings.orchestrator_max_rebridges)
        await fall_back(rt, call_id, reason)
        return "exhausted"
    if outcome != "fenced":
        log.info("re-bridge from generation %d not needed: %s", from_generation, outcome)
        return "noop"
    new_generation = int(generation)
    record = await call_record.load(rt.redis, call_id)
    if dialog_generation(record) >= new_generation:
        return "noop"  # an earlier run of this job created the new dialog
    base = record.get("api_base_url") or None
    old_child = record.get("fenced_child_call_id")
    if old_child and not record.get("fenced_child_hungup_at"):
        # Never two live media legs: a frozen gateway's leg is still up at Infobip.
        await rt.api.hangup_call(base, old_child, "NORMAL_HANGUP")
        await call_record.update(rt.redis, call_id, fenced_child_hungup_at=epoch_ms_text())

    claim = rt.claim(redis_keys.dialog_claim(call_id, new_generation), owner)
    decision = await claim_or_resolve(rt, claim, base, call_id,
                                      not_this_dialog=record.get("fenced_dialog_id") or None)
    if decision.action == "gone":
        await call_record.mark_ended(rt.redis, call_id, "ended_during_rebridge")
        REBRIDGES.labels("caller_gone").inc()
        return "gone"
    if decision.action == "exists":
        assert decision.dialog_id is not None
        await _record_dialog(rt, call_id, decision.dialog_id, None, new_generation)
        return "resolved"
    profile = record.get("profile") or rt.profiles.get(None).name
    token = await store_media_token(rt, call_id, profile, new_generation, resume=True)
    request = build_media_dialog(call_id, rt.settings.infobip_media_stream_config_id, token,
                                 profile)
    try:
        dialog = await post_dialog(rt, claim, base, request)
    except ApiError as exc:
        if exc.retryable:
            raise
        # Refused outright (4xx): the platform will not give this parent another dialog.
        REBRIDGES.labels("refused").inc()
        log.warning("new media dialog refused (%s): falling back", exc.describe())
        await call_record.update(rt.redis, call_id, unless_ended=False,
                                 rebridge_refused=exc.describe()[:200])
        await fall_back(rt, call_id, reason)
        return "refused"
    await _record_dialog(rt, call_id, dialog.id,
                         dialog.child_call.id if dialog.child_call is not None else None,
                         new_generation)
    REBRIDGES.labels("ok").inc()
    log.warning("caller re-bridged to a new media dialog (generation %d, %s)", new_generation,
                reason, extra={"dialog_id": dialog.id})
    return "ok"


async def _record_dialog(rt: Runtime, call_id: str, dialog_id: str, child_call_id: str | None,
                         generation: int) -> None:
    fields = {"dialog_id": dialog_id, "dialog_gen": str(generation),
              "rebridged_at": epoch_ms_text()}
    if child_call_id:
        fields["child_call_id"] = child_call_id
    await call_record.update(rt.redis, call_id, unless_ended=False, fields=fields)
