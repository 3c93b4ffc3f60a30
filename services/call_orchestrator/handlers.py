"""What each Calls API event does. Pure decisions over the call record + at most one action.

Events arrive duplicated and out of order (Infobip retries deliveries; replays), so every
handler is idempotent: the call record only moves forward (call_record.py), side effects
are claimed (idempotency.py) or naturally idempotent (a hangup of a gone call is a no-op),
and follow-up actions are jobs with deterministic ids (`hangup_call:<id>`,
`transfer_call:<id>`) shared with the gateway - both asking for a hangup makes one job.
Unknown event types are acknowledged and ignored.
"""

from __future__ import annotations

import logging

from arq.constants import in_progress_key_prefix, job_key_prefix

from callbridge.shared import redis_keys
from callbridge.shared.infobip_events import CallsEvent, EventType
from callbridge.shared.jobs import HANGUP_CALL, TRANSFER_CALL, job_id
from callbridge.shared.logging_setup import call_id_var
from callbridge.shared.redis_values import as_text, epoch_ms_text

from . import call_record
from .actions import transfer_number_for
from .bridge import bridge_call
from .rebridge import dialog_generation, media_generation, request_rebridge
from .runtime import Runtime

log = logging.getLogger(__name__)

HANDLED_TYPES = frozenset({
    EventType.CALL_RECEIVED, EventType.CALL_ESTABLISHED, EventType.CALL_FINISHED,
    EventType.CALL_FAILED, EventType.DIALOG_ESTABLISHED, EventType.DIALOG_FAILED,
    EventType.DIALOG_FINISHED,
})


def is_handled(event_type: str) -> bool:
    return event_type in HANDLED_TYPES


async def handle_event(rt: Runtime, event: CallsEvent, received_at: str, owner: str) -> str:
    kind = event.type
    call_id = event.subject_call_id()
    if call_id:
        call_id_var.set(call_id)
    if not is_handled(kind) or not call_id:
        log.debug("event %s ignored", kind)
        return "ignored"
    if kind == EventType.CALL_RECEIVED:
        return await bridge_call(rt, event, received_at, owner)
    if kind == EventType.CALL_ESTABLISHED:
        ok = await call_record.update(rt.redis, call_id, "established", must_exist=True,
                                      established_at=epoch_ms_text())
        return "ok" if ok else "noop"
    if kind in (EventType.CALL_FINISHED, EventType.CALL_FAILED):
        return await _call_ended(rt, event, call_id)
    if kind == EventType.DIALOG_ESTABLISHED:
        return await _dialog_established(rt, event, call_id)
    return await _dialog_ended(rt, event, call_id)


async def _call_ended(rt: Runtime, event: CallsEvent, call_id: str) -> str:
    log_ = event.properties.call_log
    if log_ is not None and log_.parent_call_id:
        return "ignored"  # a child leg (media or transfer); the caller's own call decides
    code = log_.error_code.name if log_ and log_.error_code else None
    source = log_.hangup_source if log_ else None
    reason = code or source or event.type.lower()
    # Recorded even for a call we have not bridged yet: a late CALL_RECEIVED then sees it ended.
    ended = await call_record.mark_ended(rt.redis, call_id, reason)
    if source:
        await call_record.update(rt.redis, call_id, unless_ended=False, hangup_source=source)
    return "ok" if ended else "noop"


async def _dialog_established(rt: Runtime, event: CallsEvent, call_id: str) -> str:
    dialog = event.properties.dialog
    record = await call_record.load(rt.redis, call_id)
    if not record:
        return "noop"
    if dialog is not None and dialog.id == record.get("transfer_dialog_id"):
        await call_record.update(rt.redis, call_id, "transferred",
                                 transferred_at=epoch_ms_text())
        return "ok"
    fields = {"dialog_established_at": epoch_ms_text()}
    if dialog is not None and not record.get("dialog_id"):
        fields["dialog_id"] = dialog.id
    await call_record.update(rt.redis, call_id, "dialog_established", fields=fields)
    return "ok"


def _superseded(record: dict[str, str], dialog_id: str | None) -> bool:
    """The event is about a media dialog the call has left: one a re-bridge fenced (a new
    generation is on its way), or one older than the call's current dialog."""
    if media_generation(record) > dialog_generation(record):
        return True
    current = record.get("dialog_id")
    return bool(dialog_id and current and dialog_id != current)


async def _session_ended(rt: Runtime, call_id: str) -> bool:
    """Did the gateway end its session itself (caller hang-up, tools, timeouts)? A gateway
    that was killed or lost never wrote `ended`."""
    return as_text(await rt.redis.hget(redis_keys.session_record(call_id), "state")) == "ended"


async def _job_pending(rt: Runtime, name: str, call_id: str) -> bool:
    jid = job_id(name, call_id)
    return bool(await rt.redis.exists(job_key_prefix + jid, in_progress_key_prefix + jid))


async def _dialog_ended(rt: Runtime, event: CallsEvent, call_id: str) -> str:
    """DIALOG_FAILED / DIALOG_FINISHED: never leave the caller on a silent line. A media leg
    that finished while nobody was ending the call lost its gateway: re-bridge."""
    failed = event.type == EventType.DIALOG_FAILED
    dialog = event.properties.dialog
    record = await call_record.load(rt.redis, call_id)
    if not record:
        return "noop"
    code = event.properties.error_code
    reason = (code.name if code and code.name else None) or (
        "dialog_failed" if failed else "dialog_finished")
    if dialog is not None and record.get("transfer_dialog_id") == dialog.id:
        # The transfer leg ended: hang up whatever is left (a no-op if already gone).
        if not call_record.is_ended(record):
            await rt.enqueue(HANGUP_CALL, call_id, "transfer_failed" if failed
                             else "transfer_finished", job_id=job_id(HANGUP_CALL, call_id))
        return "ok"
    if _superseded(record, dialog.id if dialog is not None else None):
        log.info("an earlier media dialog ended (%s): the call has moved on", reason)
        return "noop"
    await call_record.update(rt.redis, call_id, "dialog_failed" if failed else "dialog_finished",
                             dialog_end_reason=reason)
    if call_record.is_ended(record) or call_record.transfer_pending(record):
        return "noop"
    if event.properties.hangup_source == "PARENT_ENDPOINT":
        return "noop"  # the caller left; CALL_FINISHED will record it
    if record.get("hangup_requested_at"):
        return "noop"  # we are hanging the caller up already
    if await _job_pending(rt, TRANSFER_CALL, call_id) or await _job_pending(rt, HANGUP_CALL,
                                                                            call_id):
        return "noop"  # the gateway asked for a transfer or hang-up before closing the leg
    if not failed and not await _session_ended(rt, call_id):
        # Nobody ended this media leg on purpose: its gateway was lost.
        await request_rebridge(rt, call_id, dialog_generation(record), "media_leg_lost")
        return "rebridge"
    if failed and transfer_number_for(rt, record):
        await rt.enqueue(TRANSFER_CALL, call_id, reason, job_id=job_id(TRANSFER_CALL, call_id))
    else:
        await rt.enqueue(HANGUP_CALL, call_id, reason, job_id=job_id(HANGUP_CALL, call_id))
    return "ok"
