"""compose.yaml, deploy/kubernetes, the generated HAProxy config and the code must not drift.

Each compose service's command must be a real `callbridge` subcommand, its port and health
check must be the topology's (services/stack/topology.py), and every environment variable it
sets must be a field of that service's settings class (a renamed setting fails here, not in
production); the same for the Deployments in deploy/kubernetes (the rest of those manifests:
tests/stack/test_kubernetes_manifests.py). compose.yaml is also validated against the Compose
Specification schema that Debian's docker-compose package ships, when it is installed (CI
installs it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from callbridge.services.call_orchestrator.config import OrchestratorSettings
from callbridge.services.cli import build_parser
from callbridge.services.media_gateway.config import GatewaySettings
from callbridge.services.stack import haproxy
from callbridge.services.stack.topology import GATEWAY, INGRESS, ORCHESTRATOR, ROLES, Role
from callbridge.services.webhook_ingress.config import IngressSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SETTINGS: dict[str, type[BaseSettings]] = {
    INGRESS.name: IngressSettings, ORCHESTRATOR.name: OrchestratorSettings,
    GATEWAY.name: GatewaySettings,
}
SCHEMA = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")


def _service(role: Role) -> dict[str, Any]:
    return COMPOSE["services"][role.name]


def _subcommands() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return set(sub.choices)  # type: ignore[arg-type]


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_command_is_a_real_subcommand(role: Role) -> None:
    command = _service(role)["command"]
    assert command[0] == role.command and role.command in _subcommands()


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_port_and_health_check_match_topology(role: Role) -> None:
    service = _service(role)
    env = service["environment"]
    assert env[role.port_env] == str(role.default_port)
    assert str(role.default_port) in [str(p) for p in service["expose"]]
    check = " ".join(service["healthcheck"]["test"])
    assert f":{role.default_port}/" in check
    assert any(f":{role.default_port}{path}" in check for path in (role.ready_path, "/healthz"))
    assert service["deploy"]["replicas"] >= 2


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_every_environment_variable_is_a_setting(role: Role) -> None:
    fields = {name.upper() for name in SETTINGS[role.name].model_fields}
    unknown = set(_service(role)["environment"]) - fields
    assert not unknown, f"compose sets {sorted(unknown)} which {role.name} does not read"


def test_required_settings_are_provided() -> None:
    for role in ROLES:
        env = set(_service(role)["environment"])
        required = {name.upper() for name, f in SETTINGS[role.name].model_fields.items()
                    if f.is_required()}
        assert required <= env, f"{role.name} lacks {sorted(required - env)}"


@pytest.mark.parametrize(("name", "tls"), [("haproxy.cfg", False), ("haproxy-tls.cfg", True)])
def test_haproxy_config_is_generated_from_topology(name: str, tls: bool) -> None:
    on_disk = (ROOT / "deploy" / "haproxy" / name).read_text()
    body = "\n".join(line for line in on_disk.splitlines() if not line.startswith("# "))
    assert body.strip() == haproxy.render_compose(tls=tls).strip(), (
        f"deploy/haproxy/{name} is stale: regenerate it (see its first line)")


def test_haproxy_accepts_both_generated_configs(tmp_path: Path) -> None:
    binary = haproxy.haproxy_binary()
    if binary is None:
        pytest.skip("haproxy not installed")
    haproxy.check_config(binary, ROOT / "deploy" / "haproxy" / "haproxy.cfg")
    from callbridge.services.stack.topology import plan_local

    local = tmp_path / "local.cfg"
    local.write_text(haproxy.render_local(plan_local({"ingress": 2, "gateway": 2})))
    haproxy.check_config(binary, local)


# --- deploy/kubernetes (rendered by services/stack/kubernetes.py) --------------------------

def _kubernetes_container(role: Role) -> dict[str, Any]:
    path = ROOT / "deploy" / "kubernetes" / f"{role.name}.yaml"
    deployment = next(d for d in yaml.safe_load_all(path.read_text())
                      if d and d["kind"] == "Deployment")
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def _unknown_variables(role: Role, container: dict[str, Any]) -> set[str]:
    fields = {name.upper() for name in SETTINGS[role.name].model_fields}
    return {e["name"] for e in container["env"]} - fields


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_kubernetes_command_is_a_real_subcommand(role: Role) -> None:
    args = _kubernetes_container(role)["args"]
    assert args == [role.command] and role.command in _subcommands()


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_every_kubernetes_variable_is_a_setting(role: Role) -> None:
    container = _kubernetes_container(role)
    unknown = _unknown_variables(role, container)
    assert not unknown, f"deploy/kubernetes sets {sorted(unknown)} which {role.name} ignores"
    # The check bites: an old (renamed) gateway name or a typo is reported.
    container["env"].append({"name": "IDLE_TIMEOUT_S" if role is GATEWAY else "REDIS_ULR",
                             "value": "1"})
    assert _unknown_variables(role, container)


def test_kubernetes_sets_no_renamed_variable() -> None:
    for role in ROLES:
        renamed: dict[str, str] = getattr(SETTINGS[role.name], "RENAMED_VARIABLES", {})
        names = {e["name"] for e in _kubernetes_container(role)["env"]}
        assert not names & set(renamed), f"{role.name} sets old names {names & set(renamed)}"


def test_kubernetes_provides_required_settings() -> None:
    for role in ROLES:
        env = {e["name"]: e for e in _kubernetes_container(role)["env"]}
        for name, field in SETTINGS[role.name].model_fields.items():
            if not field.is_required():
                continue
            assert name.upper() in env, f"{role.name} lacks {name.upper()}"
            ref: dict[str, Any] = next(
                iter(env[name.upper()].get("valueFrom", {}).values()), {})
            assert not ref.get("optional"), f"{role.name}: required {name.upper()} optional"


def test_compose_file_matches_the_compose_specification() -> None:
    if not SCHEMA.exists():
        pytest.skip("Compose Specification schema not installed (apt-get install docker-compose)")
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(COMPOSE, schema)
