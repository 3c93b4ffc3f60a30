"""Create a dialog at most once per claim: claim, resolve a stale claim, post, record.

Shared by the bridge (WEBSOCKET media dialog, `dialog_claim`) and transfers (PHONE dialog,
`transfer_claim`); see idempotency.py for the claim protocol and its remaining window.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

from callbridge.shared.infobip_calls import DialogRequest, DialogResponse

from .calls_api import CallsApiFailure
from .failures import JobFailure
from .idempotency import Claim
from .runtime import Runtime

#: Call states after which no dialog can be created (reference: "The call object").
TERMINAL_CALL_STATES = {"FINISHED", "FAILED", "CANCELLED", "NO_ANSWER", "BUSY"}

#: How often to ask the Calls API whether a dead owner's in-flight POST took effect.
IN_FLIGHT_POLL_S = 0.25


class ClaimHeld(JobFailure):
    """Another live owner may be creating this dialog right now: retry after its lease."""

    ambiguous = False

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"claim held by a live owner for {wait_s:.1f}s more")
        self.retry_after = wait_s


@dataclass(frozen=True)
class Decision:
    action: Literal["post", "exists", "gone", "done", "ended"]
    dialog_id: str | None = None


async def claim_or_resolve(rt: Runtime, claim: Claim, api_base_url: str | None, call_id: str,
                           not_this_dialog: str | None = None,
                           record_key: str | None = None) -> Decision:
    """`post` when we own the claim and no dialog exists; `exists` when the platform already
    has the dialog (an earlier owner's POST took effect); `gone` when the call has ended.
    `not_this_dialog`: a dialog id that does not count (the media dialog, for transfers).
    `record_key`: `done` when that call record already has a dialog, `ended` when the call
    ended without one."""
    result = await claim.acquire(rt.settings.claim_lease_s, record_key=record_key)
    if result.outcome in ("done", "ended"):
        return Decision(result.outcome)
    if result.outcome == "acquired":
        return Decision("post")
    if result.outcome == "held":
        raise ClaimHeld(result.held_for_s())
    # Stale: we own the claim now, but an earlier POST may have taken effect, or may still
    # (sent by an owner that died with it in flight): ask until it could no longer. That is
    # the owner's request timeout plus the settle time a live owner allows after giving up
    # on a request (post_dialog): the same assumption, whether the owner lived or not.
    posted_at = result.posted_at_s()
    timeout = rt.settings.infobip_request_timeout_s
    settled_at = posted_at + 2 * timeout if posted_at else 0.0
    while True:
        try:
            call = await rt.api.get_call(api_base_url, call_id)
        except BaseException:
            await claim.mark_uncertain()
            raise
        decision = _decide(call, not_this_dialog)
        wait = settled_at - time.time()
        if decision is not None or wait <= 0:
            return decision or Decision("post")
        await asyncio.sleep(min(IN_FLIGHT_POLL_S, wait))


def _decide(call: dict[str, Any] | None, not_this_dialog: str | None) -> Decision | None:
    """What the Calls API's view of the call settles: `exists`, `gone`, or None (no dialog
    yet, call still up)."""
    if call is None:
        return Decision("gone")
    dialog_id = call.get("dialogId")
    if dialog_id and dialog_id != not_this_dialog:
        return Decision("exists", str(dialog_id))
    if str(call.get("state", "")).upper() in TERMINAL_CALL_STATES:
        return Decision("gone")
    return None


async def post_dialog(rt: Runtime, claim: Claim, api_base_url: str | None,
                      request: DialogRequest, gate_checked: bool = False) -> DialogResponse:
    """POST the dialog; on failure release the claim (nothing happened) or mark it
    uncertain (it may have happened) before the error goes to the retry machinery. The
    claim is marked `posting` right before the request leaves (after the throttle gate and
    the connection pool), so whoever takes it over if we die knows whether to wait for it."""
    try:
        return await rt.api.create_dialog(api_base_url, request, gate_checked=gate_checked,
                                          before_send=claim.mark_posting)
    except CallsApiFailure as exc:
        if exc.ambiguous:
            # The platform may still apply it: look again only after one more request
            # timeout, and retry no earlier than that.
            settle = rt.settings.infobip_request_timeout_s
            await claim.mark_uncertain(settle)
            exc.retry_after = max(exc.retry_after or 0.0, settle)
        else:
            await claim.release()
        raise
