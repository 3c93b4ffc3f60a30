"""The deployment's containers for real: compose.yaml's topology behind HAProxy.

Runs only with CALLBRIDGE_CONTAINERS=1: `.ci/containers.sh` builds the images, runs
`docker-compose --compatibility up -d`, waits for every health check and then runs this
module with the environment it used (COMPOSE_PROJECT_NAME, COMPOSE_FILE, LB_PORT,
LB_STATS_PORT, CALLBRIDGE_SIM_HOST/_INFOBIP_PORT/_OPENAI_PORT, CALLBRIDGE_COMPOSE).

The simulators run here, on the host, bound to the Docker bridge's gateway address, which
the containers reach as host.docker.internal. As an operator would after `callbridge
setup`, the test creates the media-stream config at the (simulated) account and rolls the
orchestrators with its id. Then, through HAProxy's published port: 20 calls over two gateway
and two orchestrator containers; one gateway stopped with SIGTERM mid-call (its live calls
finish within the drain window, new calls land on the other); one ingress container killed
(SIGKILL) under webhook load (every event that got a 200 is in the stream); every call
bridged exactly once; Redis restarted (`docker restart`) without losing an acknowledged
event (AOF on a volume), and calls work again afterwards. Invariants come from Redis and the
simulators' records, never from logs.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import shlex
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from callbridge.shared import redis_keys
from callbridge.simulators import ASSETS_DIR
from callbridge.simulators.infobip import CallScript, InfobipSimulator, SimCall
from callbridge.simulators.openai_realtime import RealtimeSimulator
from tests.stack.fixtures import WebhookLoad
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.environ.get("CALLBRIDGE_CONTAINERS") != "1",
                       reason="needs the compose topology up: run .ci/containers.sh"),
]

CALLER = ASSETS_DIR / "caller_order_status.wav"
SIM_INFOBIP_KEY = "sim-infobip-key"   # compose.yaml's defaults for the simulated accounts
SIM_OPENAI_KEY = "sk-sim-openai"
SAMPLE_RATE = 16000


# --- docker and compose, bounded -------------------------------------------------------

async def run(argv: list[str], timeout: float = 120, env: dict[str, str] | None = None,
              check: bool = True) -> tuple[int, str]:
    """Run a command (docker, docker-compose) with a hard time bound; (exit code, output)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})})
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{shlex.join(argv)} did not finish within {timeout}s") from None
    text = out.decode(errors="replace")
    if check and proc.returncode != 0:
        raise AssertionError(f"{shlex.join(argv)} failed ({proc.returncode}): {text[-2000:]}")
    return proc.returncode or 0, text


async def docker(*args: str, timeout: float = 60) -> str:
    return (await run(["docker", *args], timeout))[1].strip()


async def compose(*args: str, timeout: float = 180, env: dict[str, str] | None = None) -> str:
    base = shlex.split(os.environ.get("CALLBRIDGE_COMPOSE", "docker-compose --compatibility"))
    return (await run([*base, *args], timeout, env))[1]


async def containers(service: str) -> list[str]:
    """Running containers of one compose service (by label: Compose v1 and v2 alike)."""
    project = os.environ["COMPOSE_PROJECT_NAME"]
    out = await docker("ps", "-q", "--no-trunc",
                       "--filter", f"label=com.docker.compose.project={project}",
                       "--filter", f"label=com.docker.compose.service={service}")
    return sorted(out.split())


async def health(container: str) -> str:
    return await docker("inspect", "-f",
                        "{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}",
                        container)


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str,
                   interval: float = 0.5) -> None:
    """Poll an async check (docker, HTTP) until true; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_healthy(service: str, count: int, timeout: float = 90) -> list[str]:
    found: list[str] = []

    async def ready() -> bool:
        nonlocal found
        found = await containers(service)
        states = [await health(c) for c in found]
        return len(found) == count and all(s == "running/healthy" for s in states)

    await wait_for(ready, timeout, f"{count} healthy {service} container(s)", interval=1)
    return found


async def redis_url() -> str:
    """The CI override publishes Redis on a random 127.0.0.1 port (it may change on restart)."""
    (redis_id,) = await containers("redis")
    mapping = (await docker("port", redis_id, "6379")).splitlines()[0]
    # compose's Redis requires the password .ci/containers.sh generated (REDIS_PASSWORD).
    password = quote(os.environ["REDIS_PASSWORD"], safe="")
    return f"redis://:{password}@127.0.0.1:{mapping.rsplit(':', 1)[1]}/0"


async def lb_up(stats_port: int, backend: str) -> int:
    """How many of a backend's servers HAProxy currently sends traffic to (status UP)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        async with http.get(f"http://127.0.0.1:{stats_port}/stats;csv") as resp:
            text = (await resp.text()).lstrip("# ")
    return sum(1 for row in csv.DictReader(io.StringIO(text))
               if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")
               and row["status"].startswith("UP"))


# --- invariants read from Redis ----------------------------------------------------------

async def gateway_of(client: aioredis.Redis, call_id: str) -> str:
    value = await client.hget(redis_keys.session_record(call_id), "gateway_id")
    return value.decode() if value else ""


def container_of(gateway_id: str) -> str:
    """GATEWAY_ID defaults to <hostname>-<pid>; a container's hostname is its short id."""
    return gateway_id.rsplit("-", 1)[0]


async def stored_bodies(client: aioredis.Redis) -> set[bytes]:
    return {fields[b"body"] for _, fields in await client.xrange(redis_keys.EVENTS_STREAM)}


def acknowledged_bodies(sim: InfobipSimulator) -> set[bytes]:
    """Every call event the simulator delivered with a 200, as the exact bytes it posted
    (the stream stores the raw body). The load's probes are matched by their call id."""
    return {orjson.dumps(a.event) for a in sim.webhooks if a.result == 200}


def dialogs_for(sim: InfobipSimulator, call: SimCall) -> int:
    return sum(1 for r in sim.dialog_requests
               if (r.json or {}).get("parentCallId") == call.call_id)


T0 = time.monotonic()


def say(message: str) -> None:
    """Progress for CI's log (.ci/containers.sh runs pytest with -s)."""
    print(f"[containers t+{time.monotonic() - T0:5.1f}s] {message}", flush=True)


async def place(sim: InfobipSimulator, n: int) -> list[SimCall]:
    return [await sim.place_call(CallScript(caller_wav=CALLER)) for _ in range(n)]


async def test_containers_calls_drain_ingress_kill_and_redis_restart() -> None:
    lb_port = int(os.environ["LB_PORT"])
    stats_port = int(os.environ["LB_STATS_PORT"])
    sim_host = os.environ["CALLBRIDGE_SIM_HOST"]
    assert sim_host, "CALLBRIDGE_SIM_HOST is empty: the simulators would bind every interface"
    webhook_url = f"http://127.0.0.1:{lb_port}/webhook"

    openai = RealtimeSimulator(host=sim_host, port=int(os.environ["CALLBRIDGE_SIM_OPENAI_PORT"]),
                               api_key=SIM_OPENAI_KEY, speed=4.0)
    # The subscription sends the deployment's Basic credentials (.ci/containers.sh).
    webhook_auth = (os.environ["WEBHOOK_BASIC_USER"], os.environ["WEBHOOK_BASIC_PASSWORD"])
    sim = InfobipSimulator(host=sim_host, port=int(os.environ["CALLBRIDGE_SIM_INFOBIP_PORT"]),
                           api_key=SIM_INFOBIP_KEY, webhook_url=webhook_url,
                           webhook_auth=webhook_auth)
    await openai.start()
    await sim.start()
    client: aioredis.Redis | None = None
    try:
        # The account's media-stream config points at the load balancer's /media; the
        # orchestrators are rolled with its id (what an operator does after `callbridge setup`).
        config_id = sim.add_media_stream_config(url=f"ws://127.0.0.1:{lb_port}/media",
                                                sample_rate=SAMPLE_RATE)
        await compose("up", "-d", "--no-deps", "--no-build", "orchestrator",
                      env={"INFOBIP_MEDIA_STREAM_CONFIG_ID": config_id})
        await wait_healthy("orchestrator", 2)
        say(f"media-stream config {config_id} created; orchestrators rolled with it, healthy")
        gateways = await wait_healthy("gateway", 2)
        await wait_for(lambda: _lb_up_is(stats_port, "gateway", 2), 30, "2 gateways UP in HAProxy")
        client = aioredis.Redis.from_url(await redis_url())

        # 10 calls, spread over both gateway containers.
        first = await place(sim, 10)
        await wait_until(lambda: all(c.timeline.get("first_agent_audio") for c in first),
                         90, "the first 10 calls to hear the agent")

        # Session records are written asynchronously (audio never waits for Redis).
        async def placed() -> bool:
            return all([await gateway_of(client, c.call_id) for c in first])

        await wait_until(placed, 10, "every session record to name its gateway")
        before = {c.call_id: await gateway_of(client, c.call_id) for c in first}
        serving = {container_of(g) for g in before.values()}
        say(f"10 calls hear the agent, over gateway containers {sorted(serving)}")
        assert len(serving) == 2 and all(any(full.startswith(s) for full in gateways)
                                         for s in serving), (before, gateways)

        # Stop one gateway container mid-call: SIGTERM, then Docker waits (no SIGKILL before
        # the drain window ends). Its /readyz turns 503, so HAProxy marks it DOWN.
        victim_gw = container_of(before[first[0].call_id])
        stop_started = time.monotonic()
        drain_s = float(os.environ.get("GATEWAY_DRAIN_TIMEOUT_S", "120"))
        stopper = asyncio.create_task(run(["docker", "stop", "-t", str(int(drain_s) + 30),
                                           victim_gw], timeout=drain_s + 60))
        await wait_for(lambda: _lb_up_is(stats_port, "gateway", 1), 30,
                       "HAProxy to take the draining gateway out")
        say(f"gateway {victim_gw} got SIGTERM (docker stop); HAProxy marked it DOWN")

        # Kill one ingress container under webhook load.
        load = WebhookLoad(webhook_url, headers={
            "Authorization": aiohttp.encode_basic_auth(*webhook_auth)})
        load_task = asyncio.create_task(load.run(total=600))
        await wait_until(lambda: len(load.acked) >= 100, 60, "100 acknowledged webhooks")
        victim_ingress = (await containers("ingress"))[0]
        await docker("kill", victim_ingress)
        acked_at_kill = len(load.acked)
        say(f"ingress {victim_ingress[:12]} killed (SIGKILL) after {acked_at_kill} acked webhooks")

        second = await place(sim, 10)
        await load_task
        results = await asyncio.gather(*(c.wait_finished(timeout=180) for c in first + second))
        assert all(results), [(c.call_id, c.state) for c in first + second if not c.end_reason]

        # The stopped gateway's calls ran to their end, and it exited by itself within the
        # drain window (exit code 0, not Docker's SIGKILL: 137).
        drained = [c for c in first if container_of(before[c.call_id]) == victim_gw]
        assert drained
        for call in drained:
            assert call.end_reason == "caller_hangup", (call.call_id, call.end_reason)
        await stopper
        stop_took = time.monotonic() - stop_started
        assert stop_took < drain_s
        assert await docker("inspect", "-f", "{{.State.ExitCode}}", victim_gw) == "0"
        say(f"all 20 calls finished; the stopped gateway's {len(drained)} live calls ended by "
            f"caller hang-up and it exited 0 after {stop_took:.1f}s (drain window {drain_s:.0f}s)")
        # New calls all landed on the other gateway container.
        after = {container_of(await gateway_of(client, c.call_id)) for c in second}
        assert len(after) == 1 and victim_gw not in after, (after, victim_gw)
        # Every call bridged exactly once and ended by the caller hanging up.
        for call in first + second:
            assert dialogs_for(sim, call) == 1, (call.call_id, dialogs_for(sim, call))
            assert call.end_reason == "caller_hangup", (call.call_id, call.end_reason)
        # Every webhook that got a 200 is in the stream, despite the SIGKILL; the LB routed
        # around the dead ingress, so acknowledgements went on.
        stored = await stored_bodies(client)
        stored_ids = {orjson.loads(b).get("callId") for b in stored}
        lost = [c for c in load.acked if c not in stored_ids]
        assert not lost, f"{len(lost)} acknowledged probes lost, e.g. {lost[:3]}"
        assert acknowledged_bodies(sim) <= stored
        assert len(load.acked) > acked_at_kill, load.statuses
        assert "500" not in load.statuses, load.statuses
        say(f"webhook load: {load.sent} sent, statuses {load.statuses}; all {len(load.acked)} "
            f"acknowledged probes and {len(acknowledged_bodies(sim))} acknowledged call events "
            "are in the stream; 20 calls, 20 dialogs, 1 each")

        # Redis restarted: the AOF on its volume keeps every acknowledged event.
        length_before = await client.xlen(redis_keys.EVENTS_STREAM)
        await client.aclose()
        client = None
        await docker("restart", "-t", "30", (await containers("redis"))[0], timeout=90)
        await wait_healthy("redis", 1)
        client = aioredis.Redis.from_url(await redis_url())
        stored = await stored_bodies(client)
        assert await client.xlen(redis_keys.EVENTS_STREAM) == length_before
        assert acknowledged_bodies(sim) <= stored
        stored_ids = {orjson.loads(b).get("callId") for b in stored}
        assert not [c for c in load.acked if c not in stored_ids]
        say(f"redis restarted (docker restart): the stream kept all {length_before} entries")

        # ... and the services reconnected: two more calls go through end to end.
        await wait_healthy("orchestrator", 2)
        await wait_for(lambda: _lb_up_at_least(stats_port, "ingress", 1), 60, "an ingress UP")
        await wait_for(lambda: _lb_up_is(stats_port, "gateway", 1), 60, "the gateway UP")
        last = await place(sim, 2)
        assert all(await asyncio.gather(*(c.wait_finished(timeout=120) for c in last)))
        for call in last:
            assert dialogs_for(sim, call) == 1 and call.end_reason == "caller_hangup", (
                call.call_id, call.end_reason)
        say("after the restart, 2 more calls bridged and completed")
    finally:
        if client is not None:
            await client.aclose()
        await sim.stop()
        await openai.stop()


async def _lb_up_is(stats_port: int, backend: str, count: int) -> bool:
    return await lb_up(stats_port, backend) == count


async def _lb_up_at_least(stats_port: int, backend: str, count: int) -> bool:
    return await lb_up(stats_port, backend) >= count
