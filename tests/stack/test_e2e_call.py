"""One simulated call through all three services as separate processes, on real Redis.

The simulators run in this test's process, so every assertion reads what the simulated
Infobip and OpenAI actually saw, and what the services wrote to Redis.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from callbridge.services.stack.runner import LocalStack, StackOptions
from callbridge.shared import redis_keys
from callbridge.shared.pcm import is_silent, rms
from callbridge.simulators import ASSETS_DIR
from callbridge.simulators.infobip import CallScript
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e


async def test_one_call_end_to_end(redis_url: str, tmp_path: Path) -> None:
    options = StackOptions(redis_url=redis_url, log_dir=tmp_path / "logs", sample_rate=16000)
    async with LocalStack(options) as stack:
        assert stack.infobip is not None and stack.openai is not None
        call = await stack.infobip.place_call(
            CallScript(caller_wav=ASSETS_DIR / "caller_order_status.wav"))
        await call.wait_finished(timeout=90)

        # Exactly one dialog request, with the documented body (infobip-calls.md, REST).
        requests = [r for r in stack.infobip.dialog_requests
                    if (r.json or {}).get("parentCallId") == call.call_id]
        assert len(requests) == 1
        body = requests[0].json
        assert requests[0].headers.get("Authorization") == "App sim-infobip-key"
        assert body["childCallRequest"]["endpoint"] == {
            "type": "WEBSOCKET", "websocketEndpointConfigId": stack.media_config_id,
            "identifier": call.call_id}
        custom = body["childCallRequest"]["customData"]
        assert custom["cbCallId"] == call.call_id and len(custom["cbToken"]) >= 32

        # A GA session.update reached the model (openai-realtime.md, session.update).
        assert stack.openai.sessions, "the gateway never opened a Realtime session"
        session = stack.openai.sessions[0]
        assert "OpenAI-Beta" not in {k.title() for k in session.headers}
        update = session.session_updates[0]
        assert update["type"] == "realtime"
        assert update["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert update["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert update["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        assert session.truncate_errors == []

        # The caller heard real agent audio.
        heard = call.received_pcm()
        assert not is_silent(heard), f"caller heard only silence (rms {rms(heard):.0f})"
        assert call.end_reason == "caller_hangup"

        # The session record says how it ended (gateway writes it as the socket closes).
        client = aioredis.Redis.from_url(redis_url)
        try:
            record = await _wait_record_ended(client, call.call_id)
            assert record[b"end_reason"] == b"caller_hangup"
            assert int(record[b"frames_in"]) > 0 and int(record[b"frames_out"]) > 0
            assert await client.ttl(redis_keys.session_record(call.call_id)) > 0
        finally:
            await client.aclose()


async def _wait_record_ended(client: aioredis.Redis, call_id: str) -> dict[bytes, bytes]:
    async def ended() -> dict[bytes, bytes] | None:
        record = await client.hgetall(redis_keys.session_record(call_id))
        return record if record.get(b"state") == b"ended" else None

    result: dict[bytes, bytes] = await wait_until(ended, 10, "the session record to end")
    return result


def test_demo_command_reports_completed_json(redis_url: str, tmp_path: Path) -> None:
    """The README's demo, as a user runs it: `callbridge demo --json` says completed."""
    result = subprocess.run(
        [sys.executable, "-m", "callbridge.services.cli", "demo", "--json", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=150, check=False,
        env={**_env(), "REDIS_URL": redis_url})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["completed"] is True
    (call,) = summary["calls"]
    assert Path(call["wav_path"]).stat().st_size > 10_000
    assert Path(call["transcript_path"]).read_text().strip()


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("INFOBIP_", "OPENAI_"))}
