"""Media gateway settings (env var = field name upper-cased; see README "Configuration")."""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import Field

from callbridge.shared.settings import CommonSettings, OpenAISettings


def _default_gateway_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class GatewaySettings(CommonSettings, OpenAISettings):
    """Everything one gateway process needs; the defaults suit production."""

    gateway_host: str = Field("127.0.0.1", description="bind address (0.0.0.0 behind a LB)")
    gateway_port: int = Field(8090, ge=0, le=65535)
    gateway_id: str = Field(default_factory=_default_gateway_id,
                            description="names this process in Redis (gateway set, heartbeat)")
    gateway_max_sessions: int = Field(
        250, ge=1, description="admitted calls per process; more get 503 (or close 1013)")
    gateway_max_pending: int = Field(
        256, ge=1, description="connections not yet admitted (handshake, websocket:connected, "
        "token check), counted apart from the calls; past it the one waiting longest is "
        "dropped")
    agent_profiles_file: str | None = Field(None, description="TOML profiles; unset = default")

    idle_timeout_s: float = Field(
        10.0, ge=0, description="no caller audio this long = dead peer (assumes Infobip "
        "streams silence too); 0: no such check, if it suppresses silence "
        "(docs/protocol-assumptions.md)")
    max_call_duration_s: float = Field(3600.0, gt=0)
    drain_timeout_s: float = Field(300.0, ge=0, description="SIGTERM: how long live calls may run")
    model_reconnect_timeout_s: float = Field(
        8.0, gt=0, description="model lost this long -> spoken fallback, transfer or hang-up")
    model_open_timeout_s: float = Field(5.0, gt=0, description="one model connection attempt")
    hold_limit_ms: int = Field(
        1500, ge=200, description="longest silence a caller hears while the model is away")
    playout_allowance_ms: int = Field(
        60, ge=0, description="most audio assumed still buffered at Infobip when truncating")
    pending_audio_ms: int = Field(
        3000, ge=0, description="caller audio kept while the model socket opens/reconnects")
    tool_end_grace_s: float = Field(
        30.0, gt=0, description="after hang-up/transfer jobs: close the leg if still open")
    resample_quality: Literal["QQ", "LQ", "MQ", "HQ", "VHQ"] = "HQ"

    max_message_bytes: int = Field(65536, ge=1024, description="Infobip side; larger -> 1009")
    model_max_message_bytes: int = Field(16 * 1024 * 1024, ge=65536)
    keepalive_interval_s: float = Field(
        10.0, ge=0, description="ping the Infobip socket this often once a call is admitted; "
        "0: no pings (if the peer does not answer them; docs/protocol-assumptions.md)")
    keepalive_timeout_s: float = Field(
        10.0, gt=0, description="no pong within this -> the peer is gone: close 1011, "
        "end reason keepalive_timeout")
    connect_timeout_s: float = Field(
        3.0, gt=0, description="admission deadline: TCP accept -> websocket:connected "
        "received (handshake included); the token check after it has its own 2 s bound")
    max_request_bytes: int = Field(
        16384, ge=2048, description="largest HTTP upgrade request head; larger is dropped")
    preadmission_max_frame_bytes: int = Field(
        8192, ge=1024, description="largest message before admission; larger -> close 1009")
    preadmission_buffer_bytes: int = Field(
        131072, ge=16384, description="caller audio held per connection before admission "
        "(oldest dropped first), replayed once admitted")
    caller_audio_burst_ms: int = Field(
        2000, ge=200, le=10000, description="caller audio accepted ahead of real time; "
        "frames beyond it are dropped before the model (which so never gets more than real "
        "time + this)")
    caller_flood_ratio: float = Field(
        3.0, ge=1.5, le=20.0, description="a caller sending faster than this x real time...")
    caller_flood_window_s: float = Field(
        2.0, gt=0, le=30.0, description="...for this long (a bucket of ratio x window s of "
        "audio) is cut off: close 1008, end reason caller_flood")
    dtmf_max_per_s: float = Field(
        10.0, gt=0, le=50.0, description="DTMF digits per call per second (as many in a "
        "burst); more are dropped and counted")
    latency_sample_every: int = Field(
        4, ge=1, description="observe relay latency on 1 frame in N (CPU at hundreds of calls)")
