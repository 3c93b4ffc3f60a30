"""Admission: from an upgraded media socket to a call the gateway will serve, or a refusal.

Infobip's first message on the socket is `websocket:connected` (audio format and the
dialog's customData); it must carry the call's one-time media token. The contract with the
orchestrator, which mints the token when it creates the dialog
(services/call_orchestrator/bridge.py):

- customData keys `cbToken` (the token: `secrets.token_urlsafe(24)`, 32 URL-safe base64
  characters), `cbCallId` (the Infobip call id) and `cbProfile` (the agent profile name),
  read without regard to case, at the top level or nested under `customData`
  (docs/protocol-assumptions.md, "Media token location in `websocket:connected`");
- the token's Redis record (`callbridge.shared.redis_keys.media_token`) is a
  `shared.media_tokens.MediaTokenRecord` (call id, profile, expiry, the call's media
  generation, and whether this dialog resumes a call re-bridged from a lost gateway); the
  gateway deletes it as it reads it (`StateStore.claim_media_token`), so a token admits one
  connection, once.

Every value taken from `websocket:connected` is validated first (rate, token and call id
formats), then a session slot is taken, then the token is claimed. A refusal closes with a
code and a short reason, counted under a fixed `RefusalReason`
(`callbridge_gateway_refused_total`, README "Security").
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

from websockets.exceptions import ConnectionClosed

from callbridge.services.media_gateway import metrics
from callbridge.services.media_gateway.limits import SessionSlots
from callbridge.services.media_gateway.metrics import RefusalReason
from callbridge.services.media_gateway.state import StateStore, TokenStoreUnavailable
from callbridge.services.media_gateway.wire_watch import WireWatch
from callbridge.services.media_gateway.ws_fastpath import MediaConnection
from callbridge.shared import ws_close_codes as close
from callbridge.shared.infobip_media import (
    CALL_ID_KEY,
    PROFILE_KEY,
    TOKEN_KEY,
    BadSampleRate,
    Connected,
    MediaProtocolError,
    parse_control,
)
from callbridge.shared.logging_setup import call_id_var
from callbridge.shared.media_tokens import MediaTokenRecord
from callbridge.shared.profiles import AgentProfile, ProfileBook

log = logging.getLogger(__name__)

#: The orchestrator's media token is `secrets.token_urlsafe(24)` (URL-safe base64, 32
#: characters); anything outside this shape is refused before Redis is asked.
MEDIA_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: Infobip call ids are UUIDs; this admits those and the test suites' ids, and keeps
#: anything that would be awkward in a Redis key or a log line out.
CALL_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_EXPECTED_CONNECTED = "expected websocket:connected first"


@dataclass(frozen=True)
class Admitted:
    """A call the gateway will serve: who it is, its audio rate, and its wire observation
    (begun with `websocket:connected`)."""

    call_id: str
    dialog_id: str
    rate: int
    profile: AgentProfile
    wire: WireWatch
    #: the call's media generation this connection serves (fences its writes and audio)
    generation: int = 0
    #: re-bridged from a lost gateway: re-seed the conversation instead of greeting
    resume: bool = False


class Refused(Exception):
    """Admission refused: close with `code` and `detail`, counted under `reason`."""

    def __init__(self, reason: RefusalReason, detail: str, code: int = close.POLICY_VIOLATION
                 ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail[:100]  # well inside a close reason's close.MAX_REASON_BYTES
        self.code = code


async def admit(conn: MediaConnection, *, store: StateStore, profiles: ProfileBook,
                gateway_id: str, connect_timeout_s: float,
                slots: SessionSlots | None = None) -> Admitted | None:
    """`websocket:connected` first, with a valid one-time media token; otherwise close with
    a code and reason, before anything is relayed. Admitted means holding one of `slots`
    (given back by whoever serves the call); None means refused and closed."""
    try:
        async with asyncio.timeout_at(conn.created_at + connect_timeout_s):
            first = await conn.recv()
    except TimeoutError:
        await _refuse(conn, Refused(RefusalReason.TIMEOUT, "no websocket:connected"))
        return None
    except ConnectionClosed as exc:
        _closed_before_admission(conn, exc)
        return None
    try:
        return await _admit(first, store, profiles, gateway_id, slots)
    except Refused as refusal:
        await _refuse(conn, refusal)
        return None


async def _admit(first: str | bytes, store: StateStore, profiles: ProfileBook,
                 gateway_id: str, slots: SessionSlots | None) -> Admitted:
    if not isinstance(first, str):
        raise Refused(RefusalReason.PROTOCOL, _EXPECTED_CONNECTED)
    try:
        control = parse_control(first)
    except BadSampleRate as exc:
        raise Refused(RefusalReason.BAD_RATE, str(exc), close.UNSUPPORTED_DATA) from None
    except MediaProtocolError as exc:
        raise Refused(RefusalReason.PROTOCOL, f"bad websocket:connected: {exc}") from None
    if not isinstance(control, Connected):
        raise Refused(RefusalReason.PROTOCOL, _EXPECTED_CONNECTED)
    wire = WireWatch("", gateway_id)
    wire.on_connected(control)
    token, call_id = control.custom(TOKEN_KEY), control.custom(CALL_ID_KEY)
    if CALL_ID.fullmatch(call_id):
        call_id_var.set(call_id)
    if not token or not call_id:
        # Where Infobip puts customData is not published: the names (never the values)
        # of what did arrive tell an operator where to look.
        log.warning("websocket:connected without %s; keys received: %s",
                    TOKEN_KEY if not token else CALL_ID_KEY, control.describe_keys())
        raise Refused(RefusalReason.BAD_TOKEN,
                      "missing media token" if not token else f"missing {CALL_ID_KEY}")
    if not CALL_ID.fullmatch(call_id):
        raise Refused(RefusalReason.PROTOCOL, "malformed cbCallId")
    if not MEDIA_TOKEN.fullmatch(token):
        raise Refused(RefusalReason.BAD_TOKEN, "malformed media token")
    if slots is not None and not slots.try_take():
        raise Refused(RefusalReason.CAPACITY, "gateway at capacity", close.TRY_AGAIN_LATER)
    try:
        dialog_id, record, profile = await _claim(store, profiles, token, call_id,
                                                  control.custom(PROFILE_KEY) or None)
    except Refused:
        if slots is not None:
            slots.give_back()
        raise
    wire.obs.call_id = call_id
    return Admitted(call_id, dialog_id, control.sample_rate, profile, wire,
                    record.generation, record.resume)


async def _claim(store: StateStore, profiles: ProfileBook, token: str, call_id: str,
                 asked_profile: str | None) -> tuple[str, MediaTokenRecord, AgentProfile]:
    """Claim the token in Redis: (dialog id, token record, profile); raises Refused."""
    try:
        raw, dialog_id = await store.claim_media_token(token, call_id)
    except TokenStoreUnavailable as exc:
        log.error("media token check failed, Redis unavailable: %s", exc)
        raise Refused(RefusalReason.UNAVAILABLE, "token store unavailable",
                      close.INTERNAL_ERROR) from None
    if raw is None:
        raise Refused(RefusalReason.BAD_TOKEN, "unknown or already used media token")
    record = MediaTokenRecord.from_json(raw)
    if record is None:
        raise Refused(RefusalReason.BAD_TOKEN, "media token record unreadable")
    if record.call_id != call_id:
        raise Refused(RefusalReason.BAD_TOKEN, "media token belongs to another call")
    if record.expired:
        raise Refused(RefusalReason.EXPIRED, "media token expired")
    # The token record (written by the orchestrator) names the profile; the peer's
    # cbProfile is only a fallback, and an unknown name gives the default profile.
    return dialog_id, record, profiles.get(record.profile or asked_profile)


def _closed_before_admission(conn: MediaConnection, exc: ConnectionClosed) -> None:
    """The socket closed before its first message: cut off by a pre-admission limit
    (ws_fastpath), failed by websockets (1009: a frame above the pre-admission size),
    or closed by the peer."""
    cut = conn.cut_reason
    sent = exc.sent.code if exc.sent is not None else None
    if isinstance(cut, RefusalReason):
        reason = cut
    elif sent == close.MESSAGE_TOO_BIG:
        reason = RefusalReason.TOO_LARGE
    elif sent is not None and exc.rcvd is None:
        reason = RefusalReason.PROTOCOL  # websockets failed the connection
    else:
        reason = RefusalReason.OTHER  # the peer went away
    if reason is not RefusalReason.CAPACITY:  # an eviction was counted by the gate
        metrics.refused(reason)
    log.info("media connection closed before admission: %s", reason.value)


async def _refuse(conn: MediaConnection, refusal: Refused) -> None:
    metrics.refused(refusal.reason)
    log.warning("media connection refused (%s): %s", refusal.reason.value, refusal.detail)
    await conn.close(refusal.code, refusal.detail)
