"""The arq worker of an orchestrator process, and how a fresh job skips the queue poll.

Latency (webhook -> dialog request p50 <= 10 ms, p99 <= 50 ms): arq's worker
finds work by polling the queue sorted set every `poll_delay` (0.5 s), which alone puts
p50 near 250 ms; polling every few ms would hammer Redis from every process. Options read
in arq 0.28's worker.py: (a) cut the poll sleep short via an event - needs a copy of arq's
private `main()` loop; (b) the process that enqueued a job starts it at once through
`Worker.start_jobs([job_id])`, arq's own public entry from "job id" to "running task".
We take (b), in one Redis round trip (submit.py: enqueue + set the in-progress key, the
same writes arq's enqueue_job + start_jobs make): the job still goes through arq's record
(job key, queue score, in-progress key, retry counter, result), so two processes can never
both run it and retries/`Retry(defer=...)` behave exactly as if the poll had found it; jobs
enqueued by *other* processes (the gateway's hangups, `callbridge replay`) and deferred
retries are found by the normal poll. When the worker is full or shutting down the job is
only queued, and the poll picks it up.

`in_progress_timeout_s`: arq keeps a job's in-progress key for job timeout + 10 s, and a job
whose process was SIGKILLed is re-run only after that key expires: 40 s by default, far past
a ringing caller's patience. Here the key lives one process lease (ORCHESTRATOR_LEASE_S)
and this process renews it for as long as the job runs (lease.py), so a dead process's
jobs are startable by another worker one lease after its death.
"""

from __future__ import annotations

import os
from typing import Any

from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker, func

from callbridge.shared import redis_keys
from callbridge.shared.jobs import (
    ARQ_SERIALIZERS,
    HANDLE_EVENT,
    HANGUP_CALL,
    REBRIDGE_CALL,
    TRANSFER_CALL,
    deserialize_job,
    serialize_job,
)

from . import jobs
from .config import OrchestratorSettings
from .metrics import LOCAL_STARTS
from .runtime import Runtime, build_runtime
from .submit import DUPLICATE, TAKEN, submit


class OrchestratorWorker(Worker):
    """arq Worker that runs, at once, jobs this process enqueued and claimed (submit.py),
    and whose jobs' in-progress keys live one lease, renewed while they run (lease.py)."""

    def __init__(self, *args: Any, lease_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_progress_timeout_s = lease_s

    def running_job_ids(self) -> list[str]:
        """Jobs this process is running now (their in-progress keys must be renewed)."""
        return [job_id for job_id, task in self.tasks.items() if not task.done()]

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's poll hands over every id in the queue, including jobs this process is
        running right now (they stay in the sorted set until finished); skip those before
        arq spends WATCH/EXISTS/ZSCORE round trips to find out they are in progress."""
        running = self.tasks
        fresh = [j for j in job_ids
                 if (t := running.get(j.decode())) is None or t.done()]
        if fresh:
            await super().start_jobs(fresh)

    def has_room(self) -> bool:
        return self.allow_pick_jobs and self.job_counter < self.max_jobs

    async def submit(self, function: str, args: tuple[Any, ...], job_id: str) -> bool:
        """Enqueue `function(*args)` as `job_id` (False: the id exists) and, when there is
        room, run it here now - the bookkeeping mirrors arq's `start_jobs` (semaphore,
        job counter, task registry) after the in-progress key was set by the script."""
        take_ms = int(self.in_progress_timeout_s * 1000) if self.has_room() else 0
        outcome, score = await submit(self.pool, self.queue_name, function, args, job_id,
                                      take_ms)
        if outcome == DUPLICATE:
            return False
        LOCAL_STARTS.labels("taken" if outcome == TAKEN else "queued").inc()
        if outcome == TAKEN:
            await self.sem.acquire()
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, score))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task
        return True


def job_functions(settings: OrchestratorSettings) -> list[Any]:
    timeout = settings.orchestrator_job_timeout_s
    return [func(jobs.handle_event, name=HANDLE_EVENT, timeout=timeout,
                 max_tries=jobs.ARQ_MAX_TRIES),
            func(jobs.hangup_call, name=HANGUP_CALL, timeout=timeout,
                 max_tries=jobs.ARQ_MAX_TRIES),
            func(jobs.transfer_call, name=TRANSFER_CALL, timeout=timeout,
                 max_tries=jobs.ARQ_MAX_TRIES),
            func(jobs.rebridge_call, name=REBRIDGE_CALL, timeout=timeout,
                 max_tries=jobs.ARQ_MAX_TRIES)]


def build_worker(rt: Runtime, redis: ArqRedis) -> OrchestratorWorker:
    """The worker serving JOB_QUEUE with `rt` in every job's ctx. Signals are handled by
    the service (service.py), which drains in-flight jobs on SIGTERM."""
    s = rt.settings
    worker = OrchestratorWorker(
        functions=job_functions(s),
        queue_name=redis_keys.JOB_QUEUE,
        redis_pool=redis,
        handle_signals=False,
        max_jobs=s.orchestrator_max_jobs,
        job_timeout=s.orchestrator_job_timeout_s,
        keep_result=s.orchestrator_keep_result_s,
        poll_delay=s.orchestrator_poll_delay_s,
        max_tries=jobs.ARQ_MAX_TRIES,
        ctx={"rt": rt},
        log_results=False,
        health_check_interval=30,
        lease_s=s.orchestrator_lease_s,
        **ARQ_SERIALIZERS,
    )
    if rt.lease is not None:
        rt.lease.track_jobs(worker.running_job_ids)
    if s.orchestrator_local_start:
        rt.submitter = worker.submit
    return worker


class WorkerSettings:
    """For `arq callbridge.services.call_orchestrator.worker.WorkerSettings` (jobs only, no stream
    consumer, no fast path): prefer `callbridge orchestrator`, which runs both."""

    functions = [func(jobs.handle_event, name=HANDLE_EVENT, max_tries=jobs.ARQ_MAX_TRIES),
                 func(jobs.hangup_call, name=HANGUP_CALL, max_tries=jobs.ARQ_MAX_TRIES),
                 func(jobs.transfer_call, name=TRANSFER_CALL, max_tries=jobs.ARQ_MAX_TRIES),
                 func(jobs.rebridge_call, name=REBRIDGE_CALL, max_tries=jobs.ARQ_MAX_TRIES)]
    queue_name = redis_keys.JOB_QUEUE
    max_tries = jobs.ARQ_MAX_TRIES
    job_serializer = staticmethod(serialize_job)
    job_deserializer = staticmethod(deserialize_job)
    redis_settings = RedisSettings.from_dsn(os.environ.get("REDIS_URL",
                                                           "redis://127.0.0.1:6379/0"))

    @staticmethod
    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["rt"] = await build_runtime(OrchestratorSettings(), ctx["redis"])

    @staticmethod
    async def on_shutdown(ctx: dict[str, Any]) -> None:
        rt = ctx.get("rt")
        if rt is not None:
            await rt.api.close()
