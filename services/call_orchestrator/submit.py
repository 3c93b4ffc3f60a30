"""Enqueue an arq job - and optionally claim it for this process - in ONE Redis round trip.

arq's `enqueue_job` costs three round trips (WATCH, EXISTS, MULTI/EXEC) and starting a job
through `Worker.start_jobs` four more (WATCH, EXISTS, ZSCORE, MULTI/EXEC). At 50 new
calls/s each call brings ~8 events, so on a busy 2-core machine those round trips, not
Redis, were the latency (profiled: socket writes dominated). This Lua script does the same
writes atomically, in arq's own formats (`arq.jobs.serialize_job`, `arq:job:<id>` with its
expiry, the queue score, `arq:in-progress:<id>`):
  - refuse when the job or its kept result exists (arq's dedup rule);
  - PSETEX the job, ZADD it to the queue at "now";
  - with `take`, also SET the in-progress key NX - exactly what `start_jobs` would do - so
    no other worker can start it, and this process runs it at once (worker.py).
"""

from __future__ import annotations

from typing import Any

from arq.constants import (
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
)
from arq.jobs import serialize_job
from arq.utils import timestamp_ms

from callbridge.shared.jobs import serialize_job as serialize_job_json

_SUBMIT = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return -1 end
redis.call('PSETEX', KEYS[1], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
if tonumber(ARGV[5]) > 0 then
  if redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[5]) then return 1 end
end
return 0
"""

DUPLICATE, QUEUED, TAKEN = -1, 0, 1


async def submit(redis: Any, queue: str, function: str, args: tuple[Any, ...], job_id: str,
                 take_for_ms: int = 0) -> tuple[int, int]:
    """(DUPLICATE | QUEUED | TAKEN, score). TAKEN: the caller must now run the job (its
    in-progress key is set for `take_for_ms`)."""
    now = timestamp_ms()
    payload = serialize_job(function, args, {}, None, now, serializer=serialize_job_json)
    result = await redis.eval(
        _SUBMIT, 4, job_key_prefix + job_id, result_key_prefix + job_id, queue,
        in_progress_key_prefix + job_id, job_id, payload, str(now), str(expires_extra_ms),
        str(take_for_ms))
    return int(result), now
