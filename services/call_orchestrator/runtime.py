"""What every job needs, built once per process and handed to arq through `ctx["rt"]`.

`enqueue` is the one way handlers, the consumer and the gateway watch create jobs: an arq
job under a deterministic id (a duplicate is refused: that is the dedup) which - when this
process runs a worker - starts in this process at once instead of waiting for the next
queue poll (see worker.py and submit.py for why and how).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis

from callbridge.shared import redis_keys
from callbridge.shared.profiles import ProfileBook, load_profiles

from .calls_api import CallsApi
from .config import OrchestratorSettings
from .idempotency import Claim
from .lease import ProcessLease
from .retry import RetryPolicy
from .throttle import ThrottleGate

log = logging.getLogger(__name__)

#: (function, args, job_id) -> False when the id exists. Set by worker.py to the local
#: worker's one-round-trip submit-and-run; without a worker, a plain arq enqueue.
Submitter = Callable[[str, tuple[Any, ...], str], Awaitable[bool]]


@dataclass
class Runtime:
    settings: OrchestratorSettings
    redis: ArqRedis
    api: CallsApi
    profiles: ProfileBook
    policy: RetryPolicy
    submitter: Submitter | None = None
    #: This process's liveness (lease.py); None in tools that only enqueue (replay).
    lease: ProcessLease | None = None

    def claim(self, key: str, owner: str) -> Claim:
        """A claim on a side effect, owned by job attempt `owner` of this process: other
        processes see it held only while this process holds its lease."""
        return Claim(self.redis, key, owner,
                     self.lease.claim_fields() if self.lease is not None else None)

    async def enqueue(self, function: str, *args: Any, job_id: str) -> bool:
        """Enqueue `function(*args)` as job `job_id`; False when that id already exists."""
        if self.submitter is not None:
            return await self.submitter(function, args, job_id)
        job = await self.redis.enqueue_job(function, *args, _job_id=job_id,
                                           _queue_name=redis_keys.JOB_QUEUE)
        return job is not None


async def build_runtime(settings: OrchestratorSettings, redis: ArqRedis) -> Runtime:
    """What every orchestrator job needs, from the settings (the service and arq's
    stand-alone `WorkerSettings` both start with this)."""
    api = CallsApi(settings.infobip_api_key.get_secret_value(), settings.infobip_base_url,
                   settings.infobip_request_timeout_s, ThrottleGate(redis),
                   settings.orchestrator_throttle_max_wait_s, settings.infobip_api_hosts)
    policy = RetryPolicy(settings.orchestrator_retry_base_s, settings.orchestrator_retry_cap_s,
                         settings.orchestrator_retry_max_attempts)
    return Runtime(settings, redis, api, load_profiles(settings.agent_profiles_file), policy)
