"""The dead-letter stream (`redis_keys.DEAD_LETTER_STREAM`): jobs that failed for good.

An entry carries what an on-call engineer needs to understand and redo the job:
job (name), job_id, call_id, event (the raw webhook body for handle_event), stream_id,
attempts, error (HTTP status + Infobip messageId/text, or the exception), at (unix ms), and
args (JSON of the job's arguments, so `dead-letters replay` re-enqueues exactly that job).
Replaying deletes the failed job's kept arq result first (arq would refuse the id otherwise)
and removes the dead letter only once the job is back in the queue.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from arq.connections import ArqRedis
from arq.constants import result_key_prefix, retry_key_prefix

from callbridge.shared import redis_keys
from callbridge.shared.redis_values import as_text

#: Bound the stream so a long outage cannot fill Redis (approximate trim).
DEAD_LETTER_MAXLEN = 100_000


@dataclass(frozen=True)
class DeadLetter:
    id: str
    job: str
    job_id: str
    call_id: str
    attempts: str
    error: str
    at: str
    event: str
    stream_id: str
    args: list[Any]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "job": self.job, "job_id": self.job_id, "call_id": self.call_id,
                "attempts": self.attempts, "error": self.error, "at": self.at,
                "event": self.event, "stream_id": self.stream_id, "args": self.args}


async def add(redis: Any, *, job: str, job_id: str, call_id: str, attempts: int, error: str,
              args: list[Any], event: str = "", stream_id: str = "") -> str:
    fields = {"job": job, "job_id": job_id, "call_id": call_id, "event": event,
              "stream_id": stream_id, "attempts": str(attempts), "error": error[:1000],
              "at": str(int(time.time() * 1000)), "args": orjson.dumps(args).decode()}
    entry_id = await redis.xadd(redis_keys.DEAD_LETTER_STREAM, fields,
                                maxlen=DEAD_LETTER_MAXLEN, approximate=True)
    return as_text(entry_id)


def _parse(entry_id: Any, fields: dict[Any, Any]) -> DeadLetter:
    f = {as_text(k): as_text(v) for k, v in fields.items()}
    try:
        args = orjson.loads(f.get("args") or "[]")
    except orjson.JSONDecodeError:
        args = []
    return DeadLetter(as_text(entry_id), f.get("job", ""), f.get("job_id", ""),
                      f.get("call_id", ""), f.get("attempts", ""), f.get("error", ""),
                      f.get("at", ""), f.get("event", ""), f.get("stream_id", ""), list(args))


async def list_all(redis: Any, count: int = 10_000) -> list[DeadLetter]:
    entries = await redis.xrange(redis_keys.DEAD_LETTER_STREAM, count=count)
    return [_parse(entry_id, fields) for entry_id, fields in entries]


async def get(redis: Any, ids: list[str]) -> list[DeadLetter]:
    found = []
    for entry_id in ids:
        for eid, fields in await redis.xrange(redis_keys.DEAD_LETTER_STREAM, entry_id,
                                              entry_id):
            found.append(_parse(eid, fields))
    return found


async def replay(redis: ArqRedis, letter: DeadLetter) -> bool:
    """Re-enqueue the dead job under its own id; remove the letter on success."""
    if not letter.job or not letter.job_id:
        return False
    await redis.delete(result_key_prefix + letter.job_id, retry_key_prefix + letter.job_id)
    job = await redis.enqueue_job(letter.job, *letter.args, _job_id=letter.job_id,
                                  _queue_name=redis_keys.JOB_QUEUE)
    if job is None:
        return False
    await redis.xdel(redis_keys.DEAD_LETTER_STREAM, letter.id)
    return True


async def purge(redis: Any, older_than_s: float | None) -> int:
    """Delete dead letters (all, or those older than `older_than_s`). Returns the count."""
    if older_than_s is None:
        count = int(await redis.xlen(redis_keys.DEAD_LETTER_STREAM))
        await redis.delete(redis_keys.DEAD_LETTER_STREAM)
        return count
    min_id = f"{int((time.time() - older_than_s) * 1000)}-0"
    return int(await redis.xtrim(redis_keys.DEAD_LETTER_STREAM, minid=min_id))
