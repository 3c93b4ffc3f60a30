"""The arq worker of an orchestrator process, and how a fresh job skips the queue poll.

Latency (issue 4: webhook -> dialog request p50 <= 10 ms, p99 <= 50 ms): arq's worker
finds work by polling the queue sorted set every `poll_delay` (0.5 s), which alone puts
p50 near 250 ms; polling every few ms would hammer Redis from every process. Options read
in arq 0.28's worker.py: (a) cut the poll sleep short via an event - needs a copy of arq's
private `main()` loop; (b) the process that enqueued a job starts it at once through
`Worker.start_jobs([job_id])`, arq's own public entry from "job id" to "running task".
We take (b): the job still goes through arq's record (job key, queue score, the
WATCH-guarded in-progress key, retry counter, result), so two processes can never both run
it and retries/`Retry(defer=...)` behave exactly as if the poll had found it; jobs enqueued
by *other* processes (the gateway's hangups, `callbridge replay`) and deferred retries are
found by the normal poll. `start_now` refuses when the worker is full or shutting down;
the poll then picks the job up.

`in_progress_timeout_s`: arq keeps a job's in-progress key for job timeout + 10 s; a job
whose process was SIGKILLed is re-run only after that key expires. We shorten the grace
to a few seconds so a killed worker's call is recovered sooner (the claim lease in
idempotency.py covers the rest).
"""

from __future__ import annotations

import os
from typing import Any

from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker, func

from shared import redis_keys
from shared.jobs import HANDLE_EVENT, HANGUP_CALL, TRANSFER_CALL

from . import jobs
from .config import OrchestratorSettings
from .runtime import Runtime

#: Seconds the in-progress key outlives the job timeout (arq's default is 10).
IN_PROGRESS_GRACE_S = 3.0


class OrchestratorWorker(Worker):
    """arq Worker that can start a job it knows was just enqueued, without polling."""

    def __init__(self, *args: Any, in_progress_grace_s: float = IN_PROGRESS_GRACE_S,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        max_timeout = max(f.timeout_s or self.job_timeout_s for f in self.functions.values())
        self.in_progress_timeout_s = (max_timeout or 0) + in_progress_grace_s

    async def start_now(self, job_id: str) -> None:
        """Start `job_id` in this process if there is room; else leave it to the poll."""
        if not self.allow_pick_jobs or self.job_counter >= self.max_jobs:
            return
        await self.start_jobs([job_id.encode()])


def job_functions(settings: OrchestratorSettings) -> list[Any]:
    timeout = settings.orchestrator_job_timeout_s
    return [func(jobs.handle_event, name=HANDLE_EVENT, timeout=timeout,
                 max_tries=jobs.ARQ_MAX_TRIES),
            func(jobs.hangup_call, name=HANGUP_CALL, timeout=timeout,
                 max_tries=jobs.ARQ_MAX_TRIES),
            func(jobs.transfer_call, name=TRANSFER_CALL, timeout=timeout,
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
    )
    if s.orchestrator_local_start:
        rt.kick = worker.start_now
    return worker


class WorkerSettings:
    """For `arq services.call_orchestrator.worker.WorkerSettings` (jobs only, no stream
    consumer, no fast path): prefer `callbridge orchestrator`, which runs both."""

    functions = [func(jobs.handle_event, name=HANDLE_EVENT, max_tries=jobs.ARQ_MAX_TRIES),
                 func(jobs.hangup_call, name=HANGUP_CALL, max_tries=jobs.ARQ_MAX_TRIES),
                 func(jobs.transfer_call, name=TRANSFER_CALL, max_tries=jobs.ARQ_MAX_TRIES)]
    queue_name = redis_keys.JOB_QUEUE
    max_tries = jobs.ARQ_MAX_TRIES
    redis_settings = RedisSettings.from_dsn(os.environ.get("REDIS_URL",
                                                           "redis://127.0.0.1:6379/0"))

    @staticmethod
    async def on_startup(ctx: dict[str, Any]) -> None:
        from .service import build_runtime

        ctx["rt"] = await build_runtime(OrchestratorSettings(), ctx["redis"])

    @staticmethod
    async def on_shutdown(ctx: dict[str, Any]) -> None:
        rt = ctx.get("rt")
        if rt is not None:
            await rt.api.close()
