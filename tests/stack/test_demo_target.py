"""`callbridge demo --target`: simulated calls against a deployment that is already running
(as compose.yaml's is), configured for the simulators by its defaults. Here the deployment
is a LocalStack behind HAProxy started *without* simulators, so no Docker is needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from callbridge.services.demo.runner import DemoOptions, run_demo
from callbridge.services.stack.haproxy import haproxy_binary
from callbridge.services.stack.runner import LocalStack, StackOptions
from callbridge.services.stack.simulated import (
    DEMO_MEDIA_CONFIG_ID,
    SIM_INFOBIP_KEY,
    SIM_OPENAI_KEY,
)
from callbridge.shared.redis_server import free_port

pytestmark = pytest.mark.e2e


async def test_demo_against_a_running_deployment(redis_url: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    if haproxy_binary() is None:
        pytest.skip("haproxy is not installed (scripts/bootstrap.sh installs it)")
    infobip_port, openai_port = free_port(), free_port()
    # The deployment's webhook credentials (its .env): its ingress requires them, and the
    # demo reads them to configure the simulated subscription.
    webhook_auth = {"WEBHOOK_BASIC_USER": "infobip",
                    "WEBHOOK_BASIC_PASSWORD": "demo-target-Pa55-4b1e9a"}
    for name, value in webhook_auth.items():
        monkeypatch.setenv(name, value)
    deployment_env = {  # what compose.yaml's defaults say, with this test's ports
        "INFOBIP_BASE_URL": f"http://127.0.0.1:{infobip_port}",
        "INFOBIP_API_KEY": SIM_INFOBIP_KEY,
        "INFOBIP_MEDIA_STREAM_CONFIG_ID": DEMO_MEDIA_CONFIG_ID,
        "OPENAI_API_KEY": SIM_OPENAI_KEY,
        "OPENAI_REALTIME_URL": f"ws://127.0.0.1:{openai_port}/v1/realtime",
        **webhook_auth,
    }
    options = StackOptions(simulate=False, load_balancer=True, redis_url=redis_url,
                           extra_env=deployment_env, log_dir=tmp_path / "logs")
    async with LocalStack(options) as deployment:
        target = f"http://127.0.0.1:{deployment.lb_port}"
        reports = await run_demo(DemoOptions(
            calls=2, target=target, sim_ports=(infobip_port, openai_port),
            redis_url=redis_url, out_dir=tmp_path, quiet=True))
    assert [r.completed for r in reports] == [True, True], [r.problems for r in reports]
    assert all(r.session.get("end_reason") == "caller_hangup" for r in reports)
