"""CALL_RECEIVED: put the caller in a dialog with a WEBSOCKET child leg to the media gateway.

Body (Infobip's Calls API reference, https://www.infobip.com/docs/api, "Create dialog";
docs/protocol-assumptions.md for what is assumed beyond it): parentCallId,
childCallRequest {endpoint WEBSOCKET websocketEndpointConfigId, customData {cbToken,
cbCallId, cbProfile}}, propagationOptions {childCallHangup: false} - so the caller survives
the media leg dropping and we can hang up cleanly or transfer.
The media token is stored *before* the request: Infobip may connect to the gateway before
our POST even returns.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from callbridge.shared import redis_keys
from callbridge.shared.infobip_calls import (
    ChildCallRequest,
    DialogRequest,
    PropagationOptions,
    WebsocketEndpoint,
)
from callbridge.shared.infobip_events import CallsEvent
from callbridge.shared.infobip_media import CALL_ID_KEY, PROFILE_KEY, TOKEN_KEY
from callbridge.shared.media_tokens import MediaTokenRecord
from callbridge.shared.redis_values import epoch_ms_text

from . import call_record
from .calls_api import DIALOGS_SCOPE
from .dialogs import claim_or_resolve, post_dialog
from .kill_points import kill_point
from .metrics import DIALOG_LATENCY, UNBRIDGED
from .runtime import Runtime

log = logging.getLogger(__name__)


def build_media_dialog(call_id: str, config_id: str, token: str, profile: str) -> DialogRequest:
    return DialogRequest(
        parent_call_id=call_id,
        child_call_request=ChildCallRequest(
            # `identifier` is documented ("Optional identifier for websocket calls") but
            # where Infobip shows it is not; the call id there costs nothing and may let
            # an operator match a media connection to its call (preflight reports it).
            endpoint=WebsocketEndpoint(websocket_endpoint_config_id=config_id,
                                       identifier=call_id),
            custom_data={TOKEN_KEY: token, CALL_ID_KEY: call_id, PROFILE_KEY: profile},
        ),
        propagation_options=PropagationOptions(child_call_hangup=False),
    )


async def store_media_token(rt: Runtime, call_id: str, profile: str, generation: int = 0,
                            resume: bool = False) -> str:
    """One-time token for the gateway (contract: shared/media_tokens.py)."""
    token = secrets.token_urlsafe(24)
    ttl = rt.settings.media_token_ttl_s
    record = MediaTokenRecord.mint(call_id, profile, ttl, generation, resume)
    await rt.redis.set(redis_keys.media_token(token), record.to_json(), ex=ttl)
    return token


async def bridge_call(rt: Runtime, event: CallsEvent, received_at: str, owner: str) -> str:
    """Returns the job outcome: "ok" (dialog created), "noop" (already bridged),
    "resolved" (an earlier attempt's dialog was found at the Calls API), "unbridged" (the
    call ended first: recorded as such, `unbridged=1` in the call record)."""
    call_id = event.subject_call_id()
    if not call_id:
        raise ValueError("CALL_RECEIVED without a call id")
    kill_point("bridge.started")
    props = event.properties
    # Checked once per event (api_hosts.py): every request below, and the hang-ups and
    # transfers that follow the recorded URL, use the safe one.
    base = rt.api.base(props.api_base_url)
    call = props.call
    profile = rt.profiles.choose(
        call.to if call else None,
        event.calls_configuration_id or (call.calls_configuration_id if call else None))

    # One round trip: "already bridged or ended?" and the claim (idempotency.py).
    claim = rt.claim(redis_keys.dialog_claim(call_id), owner)
    decision = await claim_or_resolve(rt, claim, base, call_id,
                                      record_key=redis_keys.call_record(call_id))
    kill_point("bridge.claimed")
    now = epoch_ms_text()
    if decision.action == "done":
        log.info("call already bridged; nothing to do")
        return "noop"
    if decision.action == "exists":
        assert decision.dialog_id is not None
        await call_record.update(rt.redis, call_id, "dialog_created",
                                 dialog_id=decision.dialog_id, dialog_created_at=now)
        log.warning("an earlier attempt's dialog exists at the Calls API; recorded it",
                    extra={"dialog_id": decision.dialog_id})
        return "resolved"
    if decision.action in ("gone", "ended"):
        await call_record.mark_ended(rt.redis, call_id, "ended_before_bridge")
        # Not a quiet success: a caller rang and was never put through (a lost call).
        await call_record.update(rt.redis, call_id, unless_ended=False, unbridged="1")
        UNBRIDGED.inc()
        log.warning("call ended before it could be bridged: the caller was never put "
                    "through")
        return "unbridged"

    # One round trip's time for three independent things: the token, the record, and
    # whether a shared Retry-After currently holds dialog creation (throttle.py).
    token, _, gate_wait = await asyncio.gather(
        store_media_token(rt, call_id, profile.name),
        call_record.update(
            rt.redis, call_id, "dialog_requested", profile=profile.name,
            api_base_url=base, transfer_number=profile.transfer_number or "",
            # `to` is the callee (spec: "Callee ID"); the endpoint of an inbound call is
            # the caller, so it cannot tell us the number dialled.
            called_number=(call.to if call else None) or "",
            received_at=received_at or now, dialog_requested_at=now),
        rt.api.gate_wait_s(DIALOGS_SCOPE))
    request = build_media_dialog(call_id, rt.settings.infobip_media_stream_config_id, token,
                                 profile.name)
    if received_at:
        DIALOG_LATENCY.observe(max(0.0, time.time() - int(received_at) / 1000))
    dialog = await post_dialog(rt, claim, base, request, gate_checked=gate_wait <= 0)
    kill_point("bridge.posted")
    fields = {"dialog_id": dialog.id, "dialog_created_at": epoch_ms_text()}
    if dialog.child_call is not None:
        fields["child_call_id"] = dialog.child_call.id
    await call_record.update(rt.redis, call_id, "dialog_created", unless_ended=False,
                             fields=fields)
    log.info("dialog created", extra={"dialog_id": dialog.id, "profile": profile.name})
    return "ok"
