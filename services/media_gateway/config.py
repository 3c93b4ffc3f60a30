"""Media gateway settings (env var = field name upper-cased; see README "Configuration")."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from callbridge.shared.redis_values import process_name
from callbridge.shared.settings import CommonSettings, OpenAISettings

#: The gateway's own variables once had no prefix (IDLE_TIMEOUT_S, DRAIN_TIMEOUT_S, ...),
#: unlike the other services'; they all start GATEWAY_ now. Old names are refused at start.
_UNPREFIXED = (
    "idle_timeout_s", "max_call_duration_s", "drain_timeout_s", "model_reconnect_timeout_s",
    "model_open_timeout_s", "hold_limit_ms", "playout_allowance_ms", "pending_audio_ms",
    "tool_end_grace_s", "resample_quality", "max_message_bytes", "model_max_message_bytes",
    "keepalive_interval_s", "keepalive_timeout_s", "connect_timeout_s", "max_request_bytes",
    "preadmission_max_frame_bytes", "preadmission_buffer_bytes", "caller_audio_burst_ms",
    "caller_flood_ratio", "caller_flood_window_s", "dtmf_max_per_s", "latency_sample_every",
)


class GatewaySettings(CommonSettings, OpenAISettings):
    """Everything one gateway process needs; the defaults suit production."""

    RENAMED_VARIABLES: ClassVar[dict[str, str]] = {
        name.upper(): f"GATEWAY_{name.upper()}" for name in _UNPREFIXED}

    gateway_host: str = Field("127.0.0.1", description="bind address (0.0.0.0 behind a LB)")
    gateway_port: int = Field(8090, ge=0, le=65535)
    gateway_id: str = Field(default_factory=process_name,
                            description="names this process in Redis (gateway set, heartbeat)")
    gateway_max_sessions: int = Field(
        250, ge=1, description="admitted calls per process; more get 503 (or close 1013)")
    gateway_max_pending: int = Field(
        256, ge=1, description="connections not yet admitted (handshake, websocket:connected, "
        "token check), counted apart from the calls; past it the one waiting longest is "
        "dropped")
    agent_profiles_file: str | None = Field(None, description="TOML profiles; unset = default")

    gateway_idle_timeout_s: float = Field(
        10.0, ge=0, description="no caller audio this long = dead peer (assumes Infobip "
        "streams silence too); 0: no such check, if it suppresses silence "
        "(docs/protocol-assumptions.md)")
    gateway_max_call_duration_s: float = Field(3600.0, gt=0)
    gateway_drain_timeout_s: float = Field(
        300.0, ge=0, description="SIGTERM: how long live calls may run")
    gateway_model_reconnect_timeout_s: float = Field(
        8.0, gt=0, description="model lost this long -> spoken fallback, transfer or hang-up")
    gateway_model_open_timeout_s: float = Field(
        5.0, gt=0, description="one model connection attempt")
    gateway_hold_limit_ms: int = Field(
        1500, ge=200, description="longest silence a caller hears while the model is away")
    gateway_playout_allowance_ms: int = Field(
        60, ge=0, description="most audio assumed still buffered at Infobip when truncating")
    gateway_pending_audio_ms: int = Field(
        3000, ge=0, description="caller audio kept while the model socket opens/reconnects")
    gateway_tool_end_grace_s: float = Field(
        30.0, gt=0, description="after hang-up/transfer jobs: close the leg if still open")
    gateway_resample_quality: Literal["QQ", "LQ", "MQ", "HQ", "VHQ"] = "HQ"

    gateway_max_message_bytes: int = Field(
        65536, ge=1024, description="Infobip side; larger -> 1009")
    gateway_model_max_message_bytes: int = Field(16 * 1024 * 1024, ge=65536)
    gateway_keepalive_interval_s: float = Field(
        10.0, ge=0, description="ping the Infobip socket this often once a call is admitted; "
        "0: no pings (if the peer does not answer them; docs/protocol-assumptions.md)")
    gateway_keepalive_timeout_s: float = Field(
        10.0, gt=0, description="no pong within this -> the peer is gone: close 1011, "
        "end reason keepalive_timeout")
    gateway_connect_timeout_s: float = Field(
        3.0, gt=0, description="admission deadline: TCP accept -> websocket:connected "
        "received (handshake included); the token check after it has its own 2 s bound")
    gateway_max_request_bytes: int = Field(
        16384, ge=2048, description="largest HTTP upgrade request head; larger is dropped")
    gateway_preadmission_max_frame_bytes: int = Field(
        8192, ge=1024, description="largest message before admission; larger -> close 1009")
    gateway_preadmission_buffer_bytes: int = Field(
        131072, ge=16384, description="caller audio held per connection before admission "
        "(oldest dropped first), replayed once admitted")
    gateway_caller_audio_burst_ms: int = Field(
        2000, ge=200, le=10000, description="caller audio accepted ahead of real time; "
        "frames beyond it are dropped before the model (which so never gets more than real "
        "time + this)")
    gateway_caller_flood_ratio: float = Field(
        3.0, ge=1.5, le=20.0, description="a caller sending faster than this x real time...")
    gateway_caller_flood_window_s: float = Field(
        2.0, gt=0, le=30.0, description="...for this long (a bucket of ratio x window s of "
        "audio) is cut off: close 1008, end reason caller_flood")
    gateway_dtmf_max_per_s: float = Field(
        10.0, gt=0, le=50.0, description="DTMF digits per call per second (as many in a "
        "burst); more are dropped and counted")
    gateway_latency_sample_every: int = Field(
        4, ge=1, description="observe relay latency on 1 frame in N (CPU at hundreds of calls)")
