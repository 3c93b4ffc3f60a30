"""`callbridge preflight` against the simulators, and its capture reader against
hand-written wire observations (the gateway's side is tested with the gateway).

What each check must report comes from docs/protocol-assumptions.md and the help text in
services/ops/cli.py (PREFLIGHT_HELP).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from callbridge.services.call_orchestrator.api_hosts import DEFAULT_API_HOSTS, ApiBasePolicy
from callbridge.services.media_gateway.config import GatewaySettings
from callbridge.services.ops.preflight import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_SETUP,
    Check,
    capture_call,
    check_infobip,
    check_openai,
    exit_code,
    render,
    to_json,
)
from callbridge.shared import redis_keys
from callbridge.shared.profiles import AgentProfile
from callbridge.shared.wire_observations import (
    ClearAcks,
    ConnectedShape,
    InboundAudio,
    Keepalive,
    WireObservation,
)
from callbridge.simulators.infobip import InfobipSimulator
from callbridge.simulators.openai_realtime import RealtimeSimulator
from tests.waiting import wait_until

OPENAI_KEY = "sk-sim-preflight-secret"
INFOBIP_KEY = "ib-preflight-secret"
PUBLIC_URL = "wss://voice.example.com/media"


@pytest.fixture
async def rt() -> AsyncIterator[RealtimeSimulator]:
    async with RealtimeSimulator(api_key=OPENAI_KEY, speed=20.0) as sim:
        yield sim


@pytest.fixture
async def infobip() -> AsyncIterator[InfobipSimulator]:
    async with InfobipSimulator(api_key=INFOBIP_KEY) as sim:
        yield sim


def gateway_settings(rt: RealtimeSimulator, key: str = OPENAI_KEY) -> GatewaySettings:
    return GatewaySettings(openai_api_key=key, openai_realtime_url=rt.url)


# --- OpenAI -------------------------------------------------------------------------------

async def test_openai_prints_the_effective_session(rt: RealtimeSimulator) -> None:
    profile = AgentProfile(name="support", voice="cedar",
                           instructions="You are ACME support. " + "Be brief. " * 20)
    (check,) = await check_openai(gateway_settings(rt), [profile])
    text = render([check])
    assert check.status == "ok", text
    assert "voice: cedar" in text
    assert "tools: hang_up, transfer_to_human" in text
    assert "'You are ACME support. Be brief." in text and "(222 chars)" in text
    assert "turn detection: server_vad" in text
    assert "audio: in audio/pcm@24000, out audio/pcm@24000" in text
    # the simulator saw exactly the gateway's update (same builder, same tools)
    (session,) = await rt.wait_for_sessions(1)
    update = session.session_updates[0]
    assert update["audio"]["output"]["voice"] == "cedar"
    assert [t["name"] for t in update["tools"]] == ["hang_up", "transfer_to_human"]
    assert OPENAI_KEY not in text and OPENAI_KEY not in to_json([check]).decode()


async def test_openai_refused_profile_prints_the_error(rt: RealtimeSimulator) -> None:
    rt.reject_session_updates(1)
    (check,) = await check_openai(gateway_settings(rt), [AgentProfile()])
    text = render([check])
    assert check.status == "failed" and exit_code([check]) == EXIT_FAILED, text
    assert "error: code=invalid_value" in text
    assert "param=session.audio.output.voice" in text
    assert "This voice is not available" in text
    assert check.details["error"]["code"] == "invalid_value"


async def test_openai_bad_key_is_a_setup_error(rt: RealtimeSimulator) -> None:
    (check,) = await check_openai(gateway_settings(rt, "sk-wrong-key-123"), [AgentProfile()])
    text = render([check])
    assert check.status == "setup_error" and exit_code([check]) == EXIT_SETUP, text
    assert "code=invalid_api_key" in text and "closed: code=3000" in text
    assert "sk-wrong-key-123" not in text


async def test_cli_openai_only(rt: RealtimeSimulator) -> None:
    """The command as an operator runs it: settings from the environment, exit code 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "INFOBIP_"))}
    env.update(OPENAI_API_KEY=OPENAI_KEY, OPENAI_REALTIME_URL=rt.url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbridge.services.cli", "preflight", "--only", "openai", "--json",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == EXIT_OK, err.decode()[-2000:]
    doc = orjson.loads(out)
    assert doc["exit_code"] == 0
    assert doc["checks"][0]["details"]["effective"]["voice"] == "marin"
    assert OPENAI_KEY.encode() not in out + err


def test_cli_missing_settings_exit_2(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from callbridge.services.cli import main

    for name in list(os.environ):
        if name.startswith(("OPENAI_", "INFOBIP_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir("/")  # no .env file
    assert main(["preflight", "--only", "openai,infobip"]) == EXIT_SETUP
    out = capsys.readouterr().out
    assert "OPENAI_API_KEY is not set" in out and "INFOBIP_BASE_URL is not set" in out


def test_help_teaches_checks_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    from callbridge.services.cli import main

    with pytest.raises(SystemExit):
        main(["preflight", "--help"])
    out = capsys.readouterr().out
    for text in ("openai", "infobip", "capture", "exit codes:", "calls:configuration:manage",
                 "Ctrl-C", "OPENAI_API_KEY", "INFOBIP_API_KEY", "REDIS_URL"):
        assert text in out, text


# --- Infobip ------------------------------------------------------------------------------

async def test_infobip_good_key_and_config_found(infobip: InfobipSimulator) -> None:
    config_id = infobip.add_media_stream_config(PUBLIC_URL, 24000, name="callbridge-gateway")
    checks = await check_infobip(infobip.base_url, INFOBIP_KEY, public_url=PUBLIC_URL,
                                 configured_id=config_id)
    text = render(checks)
    assert [c.status for c in checks] == ["ok", "ok"], text
    assert f"{config_id} -> {PUBLIC_URL} at 24000 Hz" in text
    assert INFOBIP_KEY not in text
    paths = [r.path for r in infobip.requests]
    assert "/calls/1/media-stream-configs" in paths
    assert "/calls/1/calls/callbridge-preflight-probe" in paths


async def test_infobip_wrong_key_exit_2_with_hint(infobip: InfobipSimulator) -> None:
    checks = await check_infobip(infobip.base_url, "not-the-key")
    text = render(checks)
    assert exit_code(checks) == EXIT_SETUP, text
    assert "401 UNAUTHORIZED" in text and "check INFOBIP_API_KEY" in text
    assert "not-the-key" not in text


async def test_infobip_missing_scope_names_it(infobip: InfobipSimulator) -> None:
    infobip.faults.fail_next(1, status=403, path_prefix="/calls/1/media-stream-configs")
    checks = await check_infobip(infobip.base_url, INFOBIP_KEY)
    text = render(checks)
    assert exit_code(checks) == EXIT_SETUP, text
    assert "calls:configuration:manage or calls:manage" in text
    infobip.faults.fail_next(1, status=403, path_prefix="/calls/1/calls/")
    text = render(await check_infobip(infobip.base_url, INFOBIP_KEY))
    assert "calls:logs:read or calls:manage" in text


async def test_infobip_config_missing_says_run_setup(infobip: InfobipSimulator) -> None:
    checks = await check_infobip(infobip.base_url, INFOBIP_KEY, public_url=PUBLIC_URL)
    text = render(checks)
    assert checks[1].status == "failed" and checks[1].summary == "missing", text
    assert exit_code(checks) == EXIT_FAILED
    assert (f"callbridge setup --public-url {PUBLIC_URL} --name callbridge-gateway "
            "--sample-rate 24000") in text


async def test_infobip_config_mismatched_says_update(infobip: InfobipSimulator) -> None:
    infobip.add_media_stream_config("wss://old.example.com/media", 8000,
                                    name="callbridge-gateway")
    checks = await check_infobip(infobip.base_url, INFOBIP_KEY, public_url=PUBLIC_URL,
                                 configured_id="some-other-id")
    text = render(checks)
    assert checks[1].summary == "mismatched", text
    assert "url is wss://old.example.com/media" in text and "sampleRate is 8000" in text
    assert "--update" in text and "INFOBIP_MEDIA_STREAM_CONFIG_ID is some-other-id" in text


# --- capture (observations written by hand, as the gateway will) --------------------------

def good_observation(call_id: str) -> WireObservation:
    return WireObservation(
        call_id=call_id, gateway_id="gw-1", end_reason="caller_hangup",
        connected=ConnectedShape(keys=["event", "content-type", "cbToken", "cbCallId"],
                                 token_location="top", content_type="audio/l16;rate=24000"),
        inbound=InboundAudio(frames=1500, bytes=1500 * 960, frame_sizes={"960": 1500},
                             max_gap_ms=45.0),
        keepalive=Keepalive(pings_sent=3, pongs_received=3, max_rtt_ms=80.0),
        clear=ClearAcks(sent=1))


def call_received(call_id: str, api_base_url: str | None) -> dict[str, str]:
    """An events-stream entry as the ingress appends it (services/webhook_ingress)."""
    props: dict[str, Any] = {"call": {"id": call_id}}
    if api_base_url is not None:
        props["apiBaseUrl"] = api_base_url
    body = {"type": "CALL_RECEIVED", "callId": call_id, "properties": props}
    return {"body": orjson.dumps(body).decode(), "type": "CALL_RECEIVED", "call_id": call_id,
            "received_at": "1"}


async def run_capture(client: aioredis.Redis, obs: WireObservation | None,
                      api_base_url: str | None = "https://abc.api.infobip.com",
                      timeout_s: float = 30.0) -> tuple[Check, list[str]]:
    """Play Infobip, the ingress and the gateway: once armed, one CALL_RECEIVED (after an
    unrelated event), then an observation of another call, then this call's."""
    lines: list[str] = []
    policy = ApiBasePolicy("https://abc.api.infobip.com", DEFAULT_API_HOSTS)

    async def platform() -> None:
        await wait_until(lambda: client.exists(redis_keys.PREFLIGHT_ARMED), 10, "arming")
        await client.xadd(redis_keys.EVENTS_STREAM, {"type": "CALL_FINISHED", "call_id": "x",
                                                     "body": "{}"})
        await client.xadd(redis_keys.EVENTS_STREAM, call_received("call-1", api_base_url))
        if obs is not None:
            await client.xadd(redis_keys.WIRE_OBSERVATIONS_STREAM,
                              good_observation("someone-else").to_stream_fields())
            await client.xadd(redis_keys.WIRE_OBSERVATIONS_STREAM, obs.to_stream_fields(),
                              maxlen=redis_keys.WIRE_OBSERVATIONS_MAXLEN, approximate=True)

    # entries from before arming must be ignored
    await client.xadd(redis_keys.EVENTS_STREAM, call_received("old-call", None))
    feeder = asyncio.create_task(platform())
    check = await capture_call(client, number="+441134960001", timeout_s=timeout_s,
                               policy=policy, sample_rate=24000, progress=lines.append,
                               every_s=0.05)
    await feeder
    assert not await client.exists(redis_keys.PREFLIGHT_ARMED)  # disarmed
    return check, lines


def row(check: Check, name: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = check.details["rows"]
    return next(r for r in rows if r["assumption"] == name)


async def test_capture_all_held(redis_client: aioredis.Redis) -> None:
    check, lines = await run_capture(redis_client, good_observation("call-1"))
    text = render([check])
    assert check.status == "ok" and exit_code([check]) == EXIT_OK, text
    assert "Place a test call to +441134960001 now" in lines[0]
    assert "stay silent ~15 s, then hang up" in lines[0]
    assert check.details["call_id"] == "call-1"
    assert "assumption" in text and "| yes" in text
    doc = orjson.loads(to_json([check]))
    assert {r["assumption"] for r in doc["checks"][0]["details"]["rows"]} == {
        "media token location", "content-type / rate", "continuous inbound audio",
        "pong replies", '{"action":"clear"} acknowledged', "apiBaseUrl form"}


@pytest.mark.parametrize(("name", "change", "observed"), [
    ("media token location",
     {"connected": ConnectedShape(keys=["event", "content-type", "customData"],
                                  custom_data_keys=["cbToken", "cbCallId"],
                                  token_location="customData",
                                  content_type="audio/l16;rate=24000")},
     "customData: keys event, content-type, customData; customData{cbToken, cbCallId}"),
    ("content-type / rate",
     {"connected": ConnectedShape(keys=["event", "content-type", "cbToken"],
                                  token_location="top", content_type="audio/l16;rate=8000")},
     "audio/l16;rate=8000"),
    ("continuous inbound audio",
     {"inbound": InboundAudio(frames=300, frame_sizes={"960": 300}, max_gap_ms=14800.0,
                              gaps_over_threshold=4)},
     "max gap 14800 ms; 4 gap(s) > 200 ms"),
    ("pong replies", {"keepalive": Keepalive(pings_sent=2, pongs_received=0)},
     "2 ping(s) sent, 0 pong(s)"),
    ('{"action":"clear"} acknowledged',
     {"clear": ClearAcks(sent=1, replies={"websocket:cleared": 1})},
     "websocket:cleared x1"),
])
async def test_capture_reports_each_broken_assumption(
        redis_client: aioredis.Redis, name: str, change: dict[str, Any], observed: str) -> None:
    obs = good_observation("call-1").model_copy(update=change)
    check, _ = await run_capture(redis_client, obs)
    assert check.status == "failed" and exit_code([check]) == EXIT_FAILED
    broken = row(check, name)
    assert broken["held"] is False and observed in broken["observed"], broken
    assert [r["assumption"] for r in check.details["rows"] if r["held"] is not True] == [name]
    assert f"{name}: " in render([check])  # the hint line


async def test_capture_api_base_url_without_scheme(redis_client: aioredis.Redis) -> None:
    check, _ = await run_capture(redis_client, good_observation("call-1"),
                                 api_base_url="abc.api.infobip.com")
    api = row(check, "apiBaseUrl form")
    assert api["held"] is False and "no scheme" in api["observed"]
    check, _ = await run_capture(redis_client, good_observation("call-1"),
                                 api_base_url="https://evil.example.com")
    api = row(check, "apiBaseUrl form")
    assert api["held"] is False and "refused (host)" in api["observed"]


async def test_capture_untested_assumptions_do_not_pass(redis_client: aioredis.Redis) -> None:
    obs = good_observation("call-1").model_copy(update={
        "keepalive": Keepalive(), "clear": ClearAcks()})
    check, _ = await run_capture(redis_client, obs)
    text = render([check])
    assert check.status == "failed" and "2 not tested" in check.summary, text
    assert "interrupt the agent once" in text


async def test_capture_no_call_before_timeout(redis_client: aioredis.Redis) -> None:
    lines: list[str] = []
    check = await capture_call(redis_client, number="+1", timeout_s=0.3,
                               policy=ApiBasePolicy("https://api.infobip.com",
                                                    DEFAULT_API_HOSTS),
                               progress=lines.append, every_s=0.1)
    assert check.status == "setup_error" and exit_code([check]) == EXIT_SETUP
    assert "no call arrived" in check.summary
    assert any("still waiting for the call" in line for line in lines)
    assert not await redis_client.exists(redis_keys.PREFLIGHT_ARMED)


async def test_capture_no_observation_before_timeout(redis_client: aioredis.Redis) -> None:
    check, _ = await run_capture(redis_client, None, timeout_s=1.0)
    assert check.status == "setup_error" and "no wire observation" in check.summary


async def test_capture_arm_value_and_interrupt_disarms(redis_client: aioredis.Redis) -> None:
    task = asyncio.create_task(capture_call(
        redis_client, number="+1", timeout_s=600,
        policy=ApiBasePolicy("https://api.infobip.com", DEFAULT_API_HOSTS),
        progress=lambda _: None))
    raw = await wait_until(lambda: redis_client.get(redis_keys.PREFLIGHT_ARMED), 10, "arm")
    arm = orjson.loads(raw)
    assert {"by", "at"} <= set(arm)
    assert 0 < await redis_client.ttl(redis_keys.PREFLIGHT_ARMED) <= 600
    task.cancel()  # what Ctrl-C does to asyncio.run's main task
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not await redis_client.exists(redis_keys.PREFLIGHT_ARMED)


# --- end to end through the real stack -----------------------------------------------------
# NEEDS THE GATEWAY SIDE (services/media_gateway: fill the WireObservation and XADD it when
# PREFLIGHT_ARMED exists), written separately from this command.

async def _capture_through_stack(redis_url: str, tmp_path: Any, sims: Any = None,
                                 **gateway_env: str) -> tuple[Check, str]:
    """(the capture's result, its progress lines and the stack's log folder, for a failure
    message)."""
    from callbridge.services.stack.runner import LocalStack, StackOptions
    from callbridge.services.stack.simulated import SimulatorSettings
    from callbridge.simulators import ASSETS_DIR
    from callbridge.simulators.infobip import CallScript

    options = StackOptions(redis_url=redis_url, log_dir=tmp_path / "logs", sample_rate=16000,
                           simulators=sims or SimulatorSettings(),
                           # pings often enough that a short call sees several
                           extra_env={"GATEWAY_KEEPALIVE_INTERVAL_S": "0.5", **gateway_env})
    async with LocalStack(options) as stack:
        assert stack.infobip is not None
        client = aioredis.Redis.from_url(redis_url)
        armed = asyncio.Event()
        lines: list[str] = [f"logs: {stack.log_dir}"]
        try:
            capture = asyncio.create_task(capture_call(
                client, number="+442035550100", timeout_s=120,
                policy=ApiBasePolicy(stack.infobip.base_url, DEFAULT_API_HOSTS),
                sample_rate=16000, progress=lines.append, armed=armed.set))
            await asyncio.wait_for(armed.wait(), 10)
            # the caller barges in while the greeting plays, so a clear is sent
            call = await stack.infobip.place_call(CallScript(
                caller_wav=ASSETS_DIR / "caller_order_status.wav", barge_in_at_ms=300))
            await call.wait_finished(timeout=90)
            check = await asyncio.wait_for(capture, 60)
            return check, "\n".join([*lines, render([check])])
        finally:
            await client.aclose()


@pytest.mark.e2e
@pytest.mark.timeout(240)
async def test_capture_end_to_end_all_held(redis_url: str, tmp_path: Any) -> None:
    check, text = await _capture_through_stack(redis_url, tmp_path)
    assert check.status == "ok", text


@pytest.mark.e2e
@pytest.mark.timeout(240)
async def test_capture_end_to_end_reports_nested_custom_data_and_no_pongs(
        redis_url: str, tmp_path: Any) -> None:
    from callbridge.services.stack.simulated import SimulatorSettings

    check, text = await _capture_through_stack(
        redis_url, tmp_path,
        SimulatorSettings(media_custom_data="nested", media_answer_pings=False),
        GATEWAY_KEEPALIVE_TIMEOUT_S="2")
    assert check.status == "failed", text
    assert row(check, "media token location")["held"] is False, text
    assert "customData{" in row(check, "media token location")["observed"]
    assert row(check, "pong replies")["held"] is False, text
