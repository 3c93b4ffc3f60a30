"""The container machinery, checked without a Docker engine (runs in every test run).

What breaks only when the containers really run, caught early: a service left listening on
127.0.0.1 inside its container (HAProxy could not reach it), an optional secret given an
empty-string default (an empty WEBHOOK_HMAC_SECRET is "demand signatures", not "off"), an
image compose.yaml or the Dockerfile needs that the air-gapped image script does not build,
a compose file Debian's docker-compose 1.29 rejects, a shell script that does not parse.
The real run is tests/stack/test_containers_lb.py under .ci/containers.sh.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from callbridge.services.call_orchestrator.config import OrchestratorSettings
from callbridge.services.media_gateway.config import GatewaySettings
from callbridge.services.stack.topology import GATEWAY, INGRESS, ORCHESTRATOR, ROLES, Role
from callbridge.services.webhook_ingress.config import IngressSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SETTINGS: dict[str, type[BaseSettings]] = {
    INGRESS.name: IngressSettings, ORCHESTRATOR.name: OrchestratorSettings,
    GATEWAY.name: GatewaySettings,
}
SCRIPTS = [ROOT / "deploy" / "offline-images.sh", ROOT / "deploy" / "build-wheels.sh",
           ROOT / ".ci" / "containers.sh"]


def _env(role: Role) -> dict[str, Any]:
    env: dict[str, Any] = COMPOSE["services"][role.name]["environment"]
    return env


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_services_listen_on_all_interfaces_in_their_container(role: Role) -> None:
    # INGRESS_PORT -> INGRESS_HOST, ORCHESTRATOR_METRICS_PORT -> ORCHESTRATOR_METRICS_HOST...
    host_env = role.port_env.removesuffix("_PORT") + "_HOST"
    assert host_env.lower() in SETTINGS[role.name].model_fields, host_env
    assert _env(role).get(host_env) == "0.0.0.0", (
        f"{role.name} binds 127.0.0.1 by default: compose.yaml must set {host_env}=0.0.0.0")


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_optional_settings_are_passed_through_not_emptied(role: Role) -> None:
    fields = SETTINGS[role.name].model_fields
    for name, value in _env(role).items():
        field = fields[name.lower()]
        if field.is_required() or field.default is not None:
            continue
        # `NAME:` (None) passes the shell's value through or leaves it unset; "" or
        # "${NAME:-}" would set it to an empty string, which is not "unset".
        assert value is None or (isinstance(value, str) and value
                                 and not re.fullmatch(r"\$\{\w+:-\}", value)), (
            f"{role.name}: {name}={value!r} sets an optional setting to ''; write `{name}:`")


def _offline_tags() -> set[str]:
    text = (ROOT / "deploy" / "offline-images.sh").read_text()
    match = re.search(r"WANTED=\(([^)]+)\)\n", text)
    assert match, "offline-images.sh's default image list not found"
    return set(match.group(1).split())


def test_offline_images_cover_every_base_image() -> None:
    needed = set()
    for service in COMPOSE["services"].values():
        if service.get("profiles"):
            continue  # optional profiles (observability) need a registry or a mirror
        image = service.get("image", "")
        if not image.startswith("callbridge:"):
            needed.add(image)
    dockerfile = (ROOT / "Dockerfile").read_text()
    needed |= set(re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M))
    assert needed and needed <= _offline_tags(), (needed, _offline_tags())


@pytest.mark.parametrize("files", ["compose.yaml", "compose.yaml:deploy/compose.ci.yaml"])
def test_debian_docker_compose_accepts_the_file(files: str) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose not installed (CI: apt-get install docker-compose)")
    # The secrets compose requires (`${VAR:?...}`: it refuses to start without them), as an
    # operator's .env would give them.
    env = {**os.environ, "COMPOSE_FILE": files, "REDIS_PASSWORD": "compose-config-check",
           "WEBHOOK_BASIC_PASSWORD": "compose-config-check"}
    for name in ("COMPOSE_PROJECT_NAME", "DOCKER_HOST"):
        env.pop(name, None)
    result = subprocess.run([binary, "--compatibility", "config", "--quiet"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert os.access(script, os.X_OK), f"{script} is not executable"


# Security defaults of compose.yaml --------------------------------------------------------

def test_compose_requires_its_secrets_and_refuses_empty_ones() -> None:
    text = (ROOT / "compose.yaml").read_text()
    # `${VAR:?message}`: compose refuses to start when VAR is unset OR empty.
    for name in ("REDIS_PASSWORD", "WEBHOOK_BASIC_PASSWORD"):
        assert re.search(r"\$\{" + name + r":\?[^}]+\}", text), name
    assert re.search(r"\$\{(REDIS_PASSWORD|WEBHOOK_BASIC_PASSWORD):?-", text) is None
    for role in ROLES:
        url = _env(role)["REDIS_URL"]
        assert url.startswith("redis://:${REDIS_PASSWORD:?"), (role.name, url)
    assert _env(INGRESS)["WEBHOOK_BASIC_PASSWORD"].startswith("${WEBHOOK_BASIC_PASSWORD:?")


def test_compose_redis_has_a_password_a_memory_bound_and_no_eviction() -> None:
    redis = COMPOSE["services"]["redis"]
    command = " ".join(redis["command"])
    assert "requirepass" in command and "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command and "--maxmemory " in command
    # The password is never on redis-server's command line (`ps` shows it to everyone).
    assert "--requirepass" not in command and "REDIS_PASSWORD" not in command
    assert redis["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")


def test_compose_lb_is_local_only_by_default_and_can_take_a_certificate() -> None:
    lb = COMPOSE["services"]["lb"]
    assert lb["ports"][0].startswith("${LB_ADDRESS:-127.0.0.1}:")
    volumes = " ".join(lb["volumes"])
    assert "${LB_CONFIG:-haproxy.cfg}" in volumes and "${LB_TLS_CERT:-/dev/null}" in volumes
    assert (ROOT / "deploy" / "haproxy" / "haproxy-tls.cfg").exists()


def test_compose_refuses_to_start_without_its_secrets() -> None:
    """Secure by default: no Redis password, no compose (not an open Redis)."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose not installed (CI: apt-get install docker-compose)")
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_PASSWORD", "COMPOSE_PROJECT_NAME", "DOCKER_HOST")}
    env.update(COMPOSE_FILE="compose.yaml", WEBHOOK_BASIC_PASSWORD="compose-config-check")
    result = subprocess.run([binary, "--compatibility", "config", "--quiet"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "REDIS_PASSWORD" in result.stderr
