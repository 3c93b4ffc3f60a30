"""The orchestrator's call record (`redis_keys.call_record`): one hash per call, TTL CALL_TTL_S.

Fields (brief contract): state, dialog_id, profile, api_base_url, transfer_number,
received_at, dialog_requested_at, dialog_created_at, ended_at, end_reason (unix ms strings);
added here: child_call_id (the WEBSOCKET leg, hung up to free the caller for a transfer),
transfer_pending, transfer_dialog_id, established_at, dialog_established_at, state_rank,
unbridged ("1": the call ended before a dialog could be created for it - a lost call),
called_number (CALL_RECEIVED's `properties.call.to`, the number the caller dialled, as the
platform wrote it: a transfer presents it as its caller ID, actions.py). Re-bridging after a
lost gateway (rebridge.py): media_gen (the newest media generation), dialog_gen (the one
`dialog_id` serves), rebridges, rebridge_started_at, rebridge_reason, rebridged_at,
fenced_gateway, fenced_dialog_id, fenced_child_call_id, fenced_child_hungup_at.

Webhooks arrive duplicated and out of order, so the state only moves forward: each state has
a rank and an update never lowers it (a late DIALOG_ESTABLISHED cannot revive an ended call).
Timestamps and ids are written whatever the rank. One Lua script makes that atomic.
"""

from __future__ import annotations

from redis.asyncio import Redis

from callbridge.shared import redis_keys
from callbridge.shared.redis_values import as_text_hash, epoch_ms_text

# `rebridging` (rebridge.py) is the one step back: a lost gateway's call waits for its new
# media dialog, whose DIALOG_ESTABLISHED moves it on again.
RANK = {
    "received": 0, "dialog_requested": 1, "dialog_created": 2, "established": 3,
    "rebridging": 3,
    "dialog_established": 4, "dialog_failed": 5, "dialog_finished": 5, "transferring": 6,
    "transferred": 7, "hangup_requested": 8, "ended": 9,
}

_UPDATE = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'state_rank') or '-1')
local new = tonumber(ARGV[1])
if string.find(ARGV[3], 'e') and cur >= 9 then return 0 end
if string.find(ARGV[3], 'x') and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if new >= 0 and new >= cur then
  redis.call('HSET', KEYS[1], 'state', ARGV[2], 'state_rank', ARGV[1])
end
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

_END = """
if redis.call('HGET', KEYS[1], 'state') == 'ended' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'ended', 'state_rank', '9', 'ended_at', ARGV[1],
           'end_reason', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


async def load(redis: Redis, call_id: str) -> dict[str, str]:
    """The record as a str dict ({} when the call is unknown)."""
    return as_text_hash(await redis.hgetall(redis_keys.call_record(call_id)))


async def update(redis: Redis, call_id: str, state: str | None = None,
                 unless_ended: bool = True, must_exist: bool = False,
                 fields: dict[str, str] | None = None, **more: str) -> bool:
    """Write `fields` and advance `state` (never backwards). False (nothing written) when
    the call had ended and `unless_ended`, or is unknown and `must_exist` (follow-up events
    about calls we never bridged, e.g. the WEBSOCKET child leg, create no record)."""
    flags = ("e" if unless_ended else "") + ("x" if must_exist else "") or "-"
    args: list[str] = [str(RANK[state]) if state else "-1", state or "", flags,
                       str(redis_keys.CALL_TTL_S)]
    for key, value in {**(fields or {}), **more}.items():
        args += [key, value]
    result = await redis.eval(_UPDATE, 1, redis_keys.call_record(call_id), *args)
    return bool(result)


async def mark_ended(redis: Redis, call_id: str, reason: str, at: str | None = None) -> bool:
    """Record the end once; the first reason wins. False when it had already ended."""
    result = await redis.eval(_END, 1, redis_keys.call_record(call_id), at or epoch_ms_text(),
                              reason, str(redis_keys.CALL_TTL_S))
    return bool(result)


def is_ended(record: dict[str, str]) -> bool:
    return record.get("state") == "ended"


def transfer_pending(record: dict[str, str]) -> bool:
    return record.get("transfer_pending") == "1"
