"""Ending a caller's time with the agent: hang up, or transfer to a human.

Transfer semantics (reference ../shared/reference/infobip-calls.md "REST"; a call is in
one dialog at a time - *inference* from the dialog model, not verified live):
1. mark `transfer_pending` first, so the DIALOG_FINISHED our own step 2 causes is not
   mistaken for "the agent left, hang the caller up";
2. hang up the WEBSOCKET *child* call (POST /calls/1/calls/{child}/hangup). Because the
   media dialog was created with childCallHangup=false the caller's call stays up; hanging
   up the *dialog* instead would end every call in it, the caller included;
3. create a new dialog from the caller's call to a PHONE endpoint (the profile's
   transfer_number), at most once (`transfer_claim`). Default propagation: when the human
   hangs up, the caller's call ends too.
A failed transfer dialog ends in a hangup (handlers.py), never a silent line.
"""

from __future__ import annotations

import logging

from shared import redis_keys
from shared.infobip_calls import ChildCallRequest, DialogRequest, PhoneEndpoint

from . import call_record
from .dialogs import claim_or_resolve, post_dialog
from .runtime import Runtime

log = logging.getLogger("callbridge.orchestrator.actions")


def transfer_number_for(rt: Runtime, record: dict[str, str]) -> str | None:
    """The record's transfer number, else its profile's (profiles may have been edited)."""
    if record.get("transfer_number"):
        return record["transfer_number"]
    if record.get("profile"):
        return rt.profiles.get(record["profile"]).transfer_number
    return None


async def hangup(rt: Runtime, call_id: str, reason: str) -> str:
    record = await call_record.load(rt.redis, call_id)
    if call_record.is_ended(record):
        return "noop"
    if (call_record.transfer_pending(record) and reason != "transfer_failed"
            and record.get("transfer_dialog_id")):
        log.info("caller is being transferred; hangup (%s) skipped", reason)
        return "noop"
    base = record.get("api_base_url") or None
    await call_record.update(rt.redis, call_id, "hangup_requested", hangup_reason=reason,
                             hangup_requested_at=call_record.now_ms())
    found = await rt.api.hangup_call(base, call_id, "NORMAL_HANGUP")
    if not found:
        await call_record.mark_ended(rt.redis, call_id, reason)
    log.info("caller hung up (%s)", reason, extra={"found": found})
    return "ok"


async def transfer(rt: Runtime, call_id: str, reason: str, owner: str) -> str:
    record = await call_record.load(rt.redis, call_id)
    if call_record.is_ended(record):
        return "noop"
    if record.get("transfer_dialog_id"):
        return "noop"
    number = transfer_number_for(rt, record)
    if not number:
        log.info("no transfer number for this call; hanging up instead (%s)", reason)
        return await hangup(rt, call_id, reason)
    base = record.get("api_base_url") or None
    await call_record.update(rt.redis, call_id, "transferring", transfer_pending="1",
                             transfer_reason=reason, transfer_number=number)
    child = record.get("child_call_id")
    if child and not record.get("child_hungup_at"):
        await rt.api.hangup_call(base, child, "NORMAL_HANGUP")
        await call_record.update(rt.redis, call_id, child_hungup_at=call_record.now_ms())
    claim = rt.claim(redis_keys.transfer_claim(call_id), owner)
    decision = await claim_or_resolve(rt, claim, base, call_id,
                                      not_this_dialog=record.get("dialog_id"))
    if decision.action == "gone":
        await call_record.mark_ended(rt.redis, call_id, "ended_before_transfer")
        return "noop"
    if decision.action == "exists":
        assert decision.dialog_id is not None
        await call_record.update(rt.redis, call_id, transfer_dialog_id=decision.dialog_id)
        return "resolved"
    request = DialogRequest(parent_call_id=call_id, child_call_request=ChildCallRequest(
        endpoint=PhoneEndpoint(phone_number=number)))
    dialog = await post_dialog(rt, claim, base, request)
    await call_record.update(rt.redis, call_id, transfer_dialog_id=dialog.id,
                             transfer_requested_at=call_record.now_ms())
    log.info("transfer dialog created (%s)", reason, extra={"dialog_id": dialog.id})
    return "ok"
