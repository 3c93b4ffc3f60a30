"""The arq job names the orchestrator serves: a contract with the gateway, which enqueues
`hangup_call` and `transfer_call` without importing orchestrator code (data flows one way).

Job ids are deterministic (`job_id(...)`) so a duplicate enqueue is a no-op in arq.
"""

from __future__ import annotations

from typing import Any

import orjson

HANDLE_EVENT = "handle_event"
HANGUP_CALL = "hangup_call"
TRANSFER_CALL = "transfer_call"
#: A call whose media gateway was lost gets a new media dialog (orchestrator rebridge.py).
REBRIDGE_CALL = "rebridge_call"


def job_id(kind: str, *parts: str) -> str:
    """`hangup_call:<call_id>` etc. arq refuses a second job with a live id."""
    return ":".join((kind, *parts))


def serialize_job(data: dict[str, Any]) -> bytes:
    """arq's job and result records as JSON, never pickle (arq's default): with pickle,
    anyone who can write a key in Redis runs code in every worker. Jobs carry only str and
    dict arguments; a value JSON cannot hold (an exception in a failed job's result) is
    kept as its repr."""
    return orjson.dumps(data, default=repr)


def deserialize_job(raw: bytes) -> dict[str, Any]:
    """The inverse of `serialize_job`; a record that is not JSON (a planted pickle) fails
    here, and arq fails that job without running anything."""
    data = orjson.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("an arq record must be a JSON object")
    return data


#: Keyword arguments for arq's `create_pool`, `ArqRedis` and `Worker`: every process that
#: writes or reads the job queue must use the same serializer.
ARQ_SERIALIZERS: dict[str, Any] = {"job_serializer": serialize_job,
                                   "job_deserializer": deserialize_job}
