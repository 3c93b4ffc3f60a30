"""Every Redis key and stream name callbridge uses, in one place (as arq's constants.py).

Services talk to each other only through these. Per-call keys must get a TTL (CALL_TTL_S)
or be deleted when the call ends, so Redis does not grow with call history.
"""

from __future__ import annotations

PREFIX = "callbridge"

# Streams -------------------------------------------------------------------------------
#: Every accepted webhook, as received. Fields: body (raw bytes), type, call_id, received_at.
EVENTS_STREAM = f"{PREFIX}:events"
#: Consumer group the orchestrators read EVENTS_STREAM with.
EVENTS_GROUP = "orchestrator"
#: Webhook bodies the ingress refused (bad JSON, too large, ...), bounded, for forensics.
REJECTED_STREAM = f"{PREFIX}:rejected"
#: Jobs that exhausted retries or failed for good. Fields: job, call_id, event, attempts, error.
DEAD_LETTER_STREAM = f"{PREFIX}:dead_letters"

# arq -----------------------------------------------------------------------------------
#: The arq queue the orchestrator workers serve (gateway-enqueued jobs go here too).
JOB_QUEUE = f"{PREFIX}:queue"

# Per-call state (TTL CALL_TTL_S) ---------------------------------------------------------
CALL_TTL_S = 24 * 3600


def call_record(call_id: str) -> str:
    """Hash: the orchestrator's view of a call (state, dialog_id, profile, times)."""
    return f"{PREFIX}:call:{call_id}"


def dialog_claim(call_id: str, generation: int = 0) -> str:
    """String: SET NX guard so exactly one media dialog is ever requested for a call and
    media generation (0: the first dialog; each re-bridge after a lost gateway has its own)."""
    suffix = f":g{generation}" if generation else ""
    return f"{PREFIX}:dialog-claim:{call_id}{suffix}"


def media_token(token: str) -> str:
    """String (JSON, shared/media_tokens.py): a one-time media token. GETDEL to use."""
    return f"{PREFIX}:media-token:{token}"


def session_record(call_id: str) -> str:
    """Hash: the media gateway's session for a call (state, gateway, frames, end reason)."""
    return f"{PREFIX}:session:{call_id}"


def transcript_stream(call_id: str) -> str:
    """Stream: transcript lines of a call. Fields: role (caller|agent), text, at."""
    return f"{PREFIX}:transcript:{call_id}"


# Gateways ------------------------------------------------------------------------------
#: Set of gateway ids that have ever registered (status tooling iterates it).
GATEWAYS = f"{PREFIX}:gateways"


def gateway_sessions(gateway_id: str) -> str:
    """Set: call ids of the sessions a gateway currently serves."""
    return f"{PREFIX}:gateway:{gateway_id}:sessions"


def gateway_heartbeat(gateway_id: str) -> str:
    """String with a TTL, rewritten by a live gateway every HEARTBEAT_EVERY_S (JSON:
    sessions, ready, at, seq); a value that stops changing is a gateway that stopped."""
    return f"{PREFIX}:gateway:{gateway_id}:heartbeat"


# Orchestrator coordination (added for the call orchestrator) ---------------------------
#: String lock (SET NX PX): the one orchestrator that currently runs the gateway-loss check.
GATEWAY_WATCH_LOCK = f"{PREFIX}:gateway-watch:leader"


def orchestrator_lease(consumer: str) -> str:
    """String with a short TTL (ORCHESTRATOR_LEASE_S), renewed by a live orchestrator
    process; its value is the process's instance id. Gone: the process is dead, and its
    jobs, claims and pending stream entries are taken over."""
    return f"{PREFIX}:orchestrator:{consumer}:lease"


def transfer_claim(call_id: str) -> str:
    """String: SET NX guard so at most one transfer dialog is ever requested for a call."""
    return f"{PREFIX}:transfer-claim:{call_id}"


def api_throttle(scope: str) -> str:
    """String (unix ms, short TTL): no Calls API request on `scope` before this time
    (a Retry-After the platform gave; shared by every orchestrator process)."""
    return f"{PREFIX}:api-throttle:{scope}"


#: String with a TTL, set by `callbridge preflight --capture-call`: while it exists, each
#: media gateway appends what it saw on the wire of every call that ends to
#: WIRE_OBSERVATIONS_STREAM (shared/wire_observations.py), so the first live call shows
#: which protocol assumptions held (docs/protocol-assumptions.md).
PREFLIGHT_ARMED = f"{PREFIX}:preflight:armed"

#: Stream of wire observations (field `observation`: JSON of one WireObservation), capped.
WIRE_OBSERVATIONS_STREAM = f"{PREFIX}:preflight:observations"
WIRE_OBSERVATIONS_MAXLEN = 100
