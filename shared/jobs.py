"""The arq job names the orchestrator serves: a contract with the gateway, which enqueues
`hangup_call` and `transfer_call` without importing orchestrator code (data flows one way).

Job ids are deterministic (`job_id(...)`) so a duplicate enqueue is a no-op in arq.
"""

from __future__ import annotations

HANDLE_EVENT = "handle_event"
HANGUP_CALL = "hangup_call"
TRANSFER_CALL = "transfer_call"


def job_id(kind: str, *parts: str) -> str:
    """`hangup_call:<call_id>` etc. arq refuses a second job with a live id."""
    return ":".join((kind, *parts))
