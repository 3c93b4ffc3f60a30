"""Ending a caller's time with the agent: hang up, or transfer to a human.

Transfer semantics (Infobip's Calls API reference, https://www.infobip.com/docs/api, "Create
dialog"; what is inferred rather than published is listed in docs/protocol-assumptions.md,
"Transfers"; a call is in one dialog at a time - *inference* from the dialog model, not
verified live):
1. mark `transfer_pending` first, so the DIALOG_FINISHED our own step 2 causes is not
   mistaken for "the agent left, hang the caller up";
2. hang up the WEBSOCKET *child* call (POST /calls/1/calls/{child}/hangup). Because the
   media dialog was created with childCallHangup=false the caller's call stays up; hanging
   up the *dialog* instead would end every call in it, the caller included;
3. create a new dialog from the caller's call to a PHONE endpoint (the profile's
   transfer_number), at most once (`transfer_claim`); see `build_transfer_dialog` for the
   body. Default propagation: when the human hangs up, the caller's call ends too.
A failed transfer dialog ends in a hangup (handlers.py), never a silent line.
"""

from __future__ import annotations

import logging

from callbridge.shared import redis_keys
from callbridge.shared.infobip_calls import (
    ChildCallRequest,
    DialogRequest,
    PhoneEndpoint,
    PropagationOptions,
    RingbackGeneration,
    wire_phone_number,
)
from callbridge.shared.redis_values import epoch_ms_text

from . import call_record
from .dialogs import claim_or_resolve, post_dialog
from .runtime import Runtime

log = logging.getLogger(__name__)


def build_transfer_dialog(call_id: str, number: str, called_number: str | None
                          ) -> DialogRequest:
    """POST /calls/1/dialogs body: the caller's call to a PHONE child at `number`.

    - `phoneNumber`: digits only, as every example in the spec writes it; `number` comes
      from a profile, normalised when the profiles loaded (shared/profiles.py). A record
      written before that normalisation existed may still hold "+44 ...", so it passes
      through the same function (a no-op on digits).
    - `from`: the number the caller dialled, so the human sees the line the call came in on
      (and can call it back). The spec requires E.164 for `from` on calls to PHONE; when the
      called number is unknown or not a phone number (a WEBRTC application, a record from
      before `called_number` was stored) `from` is left out and the platform picks one -
      *inferred*: the spec does not say what it presents then. Whether an account may
      present a number it owns as `from` of an outbound leg without further set-up is not
      in the spec either (*unverified*).
    - `propagationOptions.ringbackGeneration.enabled`: the caller hears the platform's
      ringback while the human's phone rings. The spec applies it "only to INBOUND parent
      calls in the CALLING state; otherwise, it is ignored": it takes effect when the media
      leg failed before the caller was answered; once the caller has been answered by the
      agent, the spec says it is ignored and what the caller hears while the human's phone
      rings is not published (*unverified*). `childCallRinging` stays unset: the spec
      forbids both at once. `childCallHangup` stays at the spec's default (true).
    """
    digits = wire_phone_number(number) or number
    caller_id = wire_phone_number(called_number) if called_number else None
    return DialogRequest(
        parent_call_id=call_id,
        child_call_request=ChildCallRequest(endpoint=PhoneEndpoint(phone_number=digits),
                                            from_=caller_id),
        propagation_options=PropagationOptions(
            ringback_generation=RingbackGeneration(enabled=True)))


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
                             hangup_requested_at=epoch_ms_text())
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
        await call_record.update(rt.redis, call_id, child_hungup_at=epoch_ms_text())
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
    request = build_transfer_dialog(call_id, number, record.get("called_number"))
    if request.child_call_request.from_ is None:
        log.info("no usable called number for this call; the transfer goes out without "
                 "`from` (the platform picks the caller ID)")
    dialog = await post_dialog(rt, claim, base, request)
    await call_record.update(rt.redis, call_id, transfer_dialog_id=dialog.id,
                             transfer_requested_at=epoch_ms_text())
    log.info("transfer dialog created (%s)", reason, extra={"dialog_id": dialog.id})
    return "ok"
