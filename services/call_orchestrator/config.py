"""Orchestrator settings: the shared Redis/logging and Calls API settings plus its own knobs.

Every field is an environment variable (upper-cased name). Defaults are tuned for one
orchestrator process serving ~50 new calls/s; the retry budget (base 0.5 s, cap 30 s,
8 attempts) rides out a minute of Calls API trouble before a job is dead-lettered.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from callbridge.shared.settings import CommonSettings, InfobipSettings

from .api_hosts import DEFAULT_API_HOSTS


class OrchestratorSettings(CommonSettings, InfobipSettings):
    """Settings of `callbridge orchestrator` (one process = one stream consumer + one worker)."""

    agent_profiles_file: str | None = Field(
        None, description="TOML agent profiles (shared/profiles.py); unset -> built-in default")
    media_token_ttl_s: int = Field(120, ge=5, description="lifetime of a one-time media token")
    infobip_request_timeout_s: float = Field(
        5.0, gt=0, description="total timeout of one Calls API request")
    infobip_api_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_API_HOSTS),
        description="hosts (comma separated, `*.` for subdomains) a webhook's apiBaseUrl may "
        "name for the API key to be sent there (https, port 443); any other apiBaseUrl is "
        "replaced by INFOBIP_BASE_URL, logged and counted")

    # Retries (retry.py): exponential backoff with full jitter, Retry-After as a floor.
    orchestrator_retry_base_s: float = Field(0.5, gt=0)
    orchestrator_retry_cap_s: float = Field(30.0, gt=0)
    orchestrator_retry_max_attempts: int = Field(8, ge=1)
    orchestrator_throttle_max_wait_s: float = Field(
        2.0, ge=0, description="wait in-job for a shared Retry-After shorter than this")

    # arq worker.
    orchestrator_max_jobs: int = Field(
        200, ge=1, description="jobs run concurrently (I/O-bound: mostly waiting on Redis "
        "and the Calls API)")
    orchestrator_job_timeout_s: float = Field(30.0, gt=1)
    orchestrator_keep_result_s: int = Field(
        600, ge=0, description="arq keeps job results (and so refuses duplicate ids) this long")
    orchestrator_poll_delay_s: float = Field(0.5, gt=0)
    orchestrator_shutdown_grace_s: float = Field(
        25.0, ge=0, description="SIGTERM: time in-flight jobs get to finish")
    orchestrator_local_start: bool = Field(
        True, description="start jobs this process enqueued at once (latency fast path)")

    # Stream consumer.
    orchestrator_consumer_name: str | None = Field(
        None, description="consumer name in the group; default <hostname>-<pid>")
    orchestrator_read_count: int = Field(100, ge=1)
    orchestrator_block_ms: int = Field(1000, ge=1)
    orchestrator_claim_idle_s: float = Field(
        15.0, gt=0, description="XAUTOCLAIM entries a dead consumer left pending this long")
    orchestrator_claim_interval_s: float = Field(5.0, gt=0)

    # Liveness (lease.py): how soon another process takes over a dead one's work.
    orchestrator_lease_s: float = Field(
        1.5, ge=0.3, le=30, description="a process that has not renewed its lease this long "
        "is dead: its running jobs, its dialog claims and its pending stream entries are "
        "taken over (renewed every third of it)")

    # Gateway loss (gateway_watch.py) and re-bridging its callers (rebridge.py).
    orchestrator_gateway_check_s: float = Field(
        0.25, gt=0, le=5, description="how often the leader reads every gateway's heartbeat")
    orchestrator_gateway_lost_after_s: float = Field(
        1.0, ge=0.5, le=30, description="a gateway whose heartbeat has not changed for this "
        "long, while Redis answered every check and some other gateway's did change, is lost")
    orchestrator_max_rebridges: int = Field(
        2, ge=0, le=10, description="new media dialogs per call after lost gateways; past it "
        "(or 0) a lost gateway's caller is transferred or hung up")

    # Operations.
    orchestrator_metrics_host: str = "127.0.0.1"
    orchestrator_metrics_port: int = Field(9101, ge=0, le=65535)

    @field_validator("infobip_api_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @model_validator(mode="after")
    def _check_timeouts(self) -> OrchestratorSettings:
        # A job makes at most three sequential API requests (hang up the media leg, look
        # the call up, create a dialog); its arq timeout must outlast them or arq would
        # fail (not retry) it.
        if self.orchestrator_lease_s >= self.orchestrator_job_timeout_s:
            raise ValueError("ORCHESTRATOR_LEASE_S must be shorter than ORCHESTRATOR_JOB_TIMEOUT_S")
        if self.orchestrator_job_timeout_s < 3 * self.infobip_request_timeout_s + 1:
            raise ValueError(
                "ORCHESTRATOR_JOB_TIMEOUT_S must be at least 3 x INFOBIP_REQUEST_TIMEOUT_S + 1")
        return self

    @property
    def claim_lease_s(self) -> float:
        """How long a dialog claim's owner is presumed alive: past its job timeout, arq has
        cancelled the owner's job (or its process is gone), so the claim can be resolved."""
        return self.orchestrator_job_timeout_s + 1.0
