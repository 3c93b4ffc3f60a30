"""How a call ends on purpose: the decisions are the session's, the sequence is here.

Why calls end (the session record's `end_reason`):
- caller hangs up (socket closed by Infobip): `caller_hangup`, unless a tool or timeout had
  already decided the end (`agent_hangup`, `transferred`, `max_duration`, `model_failed`).
- `hang_up` / `transfer_to_human` tools: after the agent's last words were played out, the
  `hangup_call` / `transfer_call` job is enqueued; the orchestrator ends the media leg. If it
  has not after GATEWAY_TOOL_END_GRACE_S, we close the socket ourselves.
- idle timeout (watchdog.py): `hangup_call` job, close now.
- max duration: a short spoken notice, then `hangup_call` (`max_duration`), close after the
  grace period if the orchestrator has not.
- model lost for GATEWAY_MODEL_RECONNECT_TIMEOUT_S (hold sound meanwhile): a spoken fallback, then
  `transfer_call` when the profile has a transfer number, else `hangup_call` (`model_failed`).
- caller flooding (audio above GATEWAY_CALLER_FLOOD_RATIO x real time, limits.py): the connection
  cut it off with close 1008; `hangup_call` (`caller_flood`).
- a keepalive ping unanswered (wire_watch.keepalive): `keepalive_timeout`, close 1011.
- drain timeout or an internal error (`MediaSession.terminate`): `hangup_call`, close now.
"""

from __future__ import annotations

import asyncio

from callbridge.services.media_gateway.caller_output import CallerOutput
from callbridge.services.media_gateway.model_link import ModelLink
from callbridge.services.media_gateway.relay import Relay
from callbridge.services.media_gateway.state import StateStore
from callbridge.services.media_gateway.ws_fastpath import MediaConnection
from callbridge.shared import ws_close_codes as close

#: How long a notice may take beyond its own length to be heard out.
NOTICE_SLACK_S = 5.0


async def ending_sequence(conn: MediaConnection, link: ModelLink, output: CallerOutput,
                          relay: Relay, store: StateStore, call_id: str, job: str | None,
                          job_reason: str, notice: bytes | None, grace: float) -> None:
    """Mute the agent; play `notice` (cutting the agent off) and wait until it was heard;
    enqueue `job` for the orchestrator; close the socket if it has not within `grace`."""
    link.muted = True  # the agent has said its last words
    if notice is not None:
        relay.model_audio = False  # model audio is ignored from here on
        await link.close()
        await output.wait_played_out(output.play_notice(notice) + NOTICE_SLACK_S)
    if job is not None:
        store.enqueue_job(job, call_id, job_reason)
    closed = True
    try:
        async with asyncio.timeout(grace):
            await conn.wait_closed()
    except TimeoutError:
        closed = False
    # Not inside the `except`: a cancel (`_finish`) there chains the TimeoutError, whose
    # traceback holds asyncio's Timeout, which holds this task: a cycle keeping the session.
    if not closed:
        await conn.close(close.NORMAL_CLOSURE, "call ended")
