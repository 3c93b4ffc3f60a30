"""What every job needs, built once per process and handed to arq through `ctx["rt"]`.

`enqueue` is the one way handlers, the consumer and the gateway watch create jobs: arq's
`enqueue_job` under a deterministic id (a duplicate is refused: that is the dedup), then -
when this process runs a worker - a `kick` that starts the job in this process at once
instead of waiting for the next queue poll (see worker.py for why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis

from shared import redis_keys
from shared.profiles import ProfileBook

from .calls_api import CallsApi
from .config import OrchestratorSettings
from .retry import RetryPolicy

log = logging.getLogger("callbridge.orchestrator")

Kick = Callable[[str], Awaitable[None]]


@dataclass
class Runtime:
    settings: OrchestratorSettings
    redis: ArqRedis
    api: CallsApi
    profiles: ProfileBook
    policy: RetryPolicy
    kick: Kick | None = None
    _kicks: set[asyncio.Task[None]] = field(default_factory=set)

    async def enqueue(self, function: str, *args: Any, job_id: str) -> bool:
        """Enqueue `function(*args)` as job `job_id`; False when that id already exists."""
        job = await self.redis.enqueue_job(function, *args, _job_id=job_id,
                                           _queue_name=redis_keys.JOB_QUEUE)
        if job is None:
            return False
        self.start_soon(job_id)
        return True

    def start_soon(self, job_id: str) -> None:
        """Ask the local worker to start `job_id` now, without blocking the caller."""
        if self.kick is None:
            return
        task = asyncio.create_task(self._kick(job_id))
        self._kicks.add(task)
        task.add_done_callback(self._kicks.discard)

    async def _kick(self, job_id: str) -> None:
        assert self.kick is not None
        try:
            await self.kick(job_id)
        except Exception:  # the queue poll picks the job up anyway
            log.debug("local start of %s failed; left to the queue poll", job_id,
                      exc_info=True)

    async def drain_kicks(self) -> None:
        for task in list(self._kicks):
            with contextlib.suppress(Exception):
                await task
