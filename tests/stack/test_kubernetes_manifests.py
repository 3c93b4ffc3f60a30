"""deploy/kubernetes/*.yaml: current, valid Kubernetes objects, and true to the services.

No cluster runs here. What is checked, offline:
- the committed files are exactly what services/stack/kubernetes.py renders;
- every object validates against the Kubernetes OpenAPI schemas of pinned versions
  (kubernetes-validate, strict: an unknown or misspelt field is an error);
- `kubectl kustomize` builds the folder (when kubectl is installed);
- probes and ports are the topology's, the gateway's termination grace outlasts its preStop
  pause and drain, secrets come from a Secret, every Deployment has a PodDisruptionBudget, the
  gateway an autoscaler on its live-calls gauge; the HAProxy config passes `haproxy -c`.
Each check is a function returning problems, run on the committed files (none expected) and
on a planted bad copy (the problem must be reported), so no check passes vacuously.
Settings-level drift (every variable a real setting) is in test_deploy_drift.py.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from callbridge.services.media_gateway import metrics as gateway_metrics
from callbridge.services.media_gateway.config import GatewaySettings
from callbridge.services.stack import haproxy, kubernetes
from callbridge.services.stack.topology import GATEWAY, INGRESS, ROLES, Role

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "deploy" / "kubernetes"
DOCS = ROOT / "docs" / "kubernetes.md"
#: The oldest Kubernetes the manifests claim (PodDisruptionBudget's
#: unhealthyPodEvictionPolicy is GA from 1.31) and the newest schema kubernetes-validate
#: bundles at the locked version.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")

Objects = dict[str, list[dict[str, Any]]]


def _load(folder: Path = FOLDER) -> Objects:
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
            for p in sorted(folder.glob("*.yaml")) if p.name != "kustomization.yaml"}


OBJECTS = _load()


def _all(objects: Objects) -> list[dict[str, Any]]:
    return [obj for docs in objects.values() for obj in docs]


def _find(objects: Objects, kind: str, name: str) -> dict[str, Any] | None:
    return next((o for o in _all(objects)
                 if o["kind"] == kind and o["metadata"]["name"] == name), None)


def _container(objects: Objects, role: Role) -> dict[str, Any]:
    deployment = _find(objects, "Deployment", role.name)
    assert deployment is not None, f"no Deployment {role.name}"
    return typing.cast(dict[str, Any], deployment["spec"]["template"]["spec"]["containers"][0])


def _is_secret(settings: type[BaseSettings], env_name: str) -> bool:
    field = settings.model_fields.get(env_name.lower())
    if field is None:
        return False
    return field.annotation is SecretStr or SecretStr in typing.get_args(field.annotation)


# --- Checks: each returns the problems it finds ------------------------------------------

def schema_problems(objects: Objects, version: str) -> list[str]:
    problems = []
    for name, docs in objects.items():
        for obj in docs:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = "/".join(str(p) for p in exc.path)
                problems.append(f"{name} {obj.get('kind')}: {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                problems.append(f"{name}: {exc.message}")
    return problems


def probe_problems(objects: Objects) -> list[str]:
    problems = []
    for role in ROLES:
        c = _container(objects, role)
        if c["args"][:1] != [role.command]:
            problems.append(f"{role.name}: args {c['args']}, not [{role.command!r}]")
        if [p["containerPort"] for p in c["ports"]] != [role.default_port]:
            problems.append(f"{role.name}: ports {c['ports']}, not {role.default_port}")
        env = {e["name"]: e.get("value") for e in c["env"]}
        if env.get(role.port_env) != str(role.default_port):
            problems.append(f"{role.name}: {role.port_env} is not {role.default_port}")
        for probe, path in (("readinessProbe", role.ready_path), ("livenessProbe", "/healthz")):
            get = c.get(probe, {}).get("httpGet", {})
            if (get.get("path"), get.get("port")) != (path, role.default_port):
                problems.append(f"{role.name}: {probe} is {get}, not GET {path} on "
                                f"{role.default_port}")
    return problems


def drain_problems(objects: Objects) -> list[str]:
    """The gateway: a preStop hook, and a grace longer than preStop + its drain timeout (the
    value its manifest sets, else the settings default); HAProxy's grace at least as long."""
    problems = []
    deployment = _find(objects, "Deployment", GATEWAY.name)
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if not command:
        problems.append("gateway: no preStop exec hook")
    pause = float(command[-1]) if command and command[0] == "sleep" else 0.0
    env = {e["name"]: e.get("value") for e in container["env"]}
    drain = float(env.get("GATEWAY_DRAIN_TIMEOUT_S")
                  or GatewaySettings.model_fields["gateway_drain_timeout_s"].default)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if not grace > pause + drain:
        problems.append(f"gateway: grace {grace} s <= preStop {pause} s + drain {drain} s")
    lb = _find(objects, "Deployment", "lb")
    if lb is None or lb["spec"]["template"]["spec"].get("terminationGracePeriodSeconds",
                                                         30) < grace:
        problems.append("lb: termination grace shorter than the gateway's (cuts live calls)")
    return problems


def secret_problems(objects: Objects) -> list[str]:
    """Secret settings (SecretStr fields, and REDIS_URL which carries the password) only by
    secretKeyRef; no literal anywhere holds what the Secret holds."""
    problems = []
    for role in ROLES:
        settings = kubernetes.SETTINGS[role.name]
        for e in _container(objects, role)["env"]:
            secret = _is_secret(settings, e["name"]) or e["name"] == "REDIS_URL"
            if secret and "secretKeyRef" not in e.get("valueFrom", {}):
                problems.append(f"{role.name}: {e['name']} is not from a secretKeyRef")
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None and ref["name"] != kubernetes.SECRET:
                problems.append(f"{role.name}: {e['name']} from Secret {ref['name']}")
    for obj in _all(objects):
        if obj["kind"] == "Secret":
            problems.append(f"a Secret is committed: {obj['metadata']['name']}")
    return problems


def budget_problems(objects: Objects) -> list[str]:
    """A PodDisruptionBudget selecting each Deployment's pods; the gateway's autoscaler on
    its live-calls gauge, aimed at the gateway Deployment."""
    problems = []
    for d in _all(objects):
        if d["kind"] != "Deployment":
            continue
        labels = d["spec"]["template"]["metadata"]["labels"]
        if not any(o["kind"] == "PodDisruptionBudget"
                   and o["spec"]["selector"]["matchLabels"].items() <= labels.items()
                   for o in _all(objects)):
            problems.append(f"no PodDisruptionBudget for Deployment {d['metadata']['name']}")
    hpa = _find(objects, "HorizontalPodAutoscaler", GATEWAY.name)
    gauge = next(iter(gateway_metrics.ACTIVE_SESSIONS.describe())).name
    if hpa is None:
        return [*problems, "no HorizontalPodAutoscaler for the gateway"]
    if hpa["spec"]["scaleTargetRef"] != {"apiVersion": "apps/v1", "kind": "Deployment",
                                         "name": GATEWAY.name}:
        problems.append(f"HPA targets {hpa['spec']['scaleTargetRef']}")
    names = [m.get("pods", {}).get("metric", {}).get("name") for m in hpa["spec"]["metrics"]]
    if names != [gauge]:
        problems.append(f"HPA scales on {names}, not the gateway's gauge {gauge}")
    return problems


def resource_problems(objects: Objects) -> list[str]:
    """Every container requests CPU and memory; callbridge's have no CPU limit (throttling
    makes media frames late) and a memory limit at least the request."""
    problems = []
    for obj in _all(objects):
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for c in obj["spec"]["template"]["spec"]["containers"]:
            res = c.get("resources", {})
            if set(res.get("requests", {})) != {"cpu", "memory"}:
                problems.append(f"{c['name']}: requests {res.get('requests')}")
            if "cpu" in res.get("limits", {}):
                problems.append(f"{c['name']}: a CPU limit")
            if "memory" not in res.get("limits", {}):
                problems.append(f"{c['name']}: no memory limit")
    return problems


CHECKS: dict[str, Callable[[Objects], list[str]]] = {
    "probes": probe_problems, "drain": drain_problems, "secrets": secret_problems,
    "budgets": budget_problems, "resources": resource_problems,
}


# --- Planted faults: each must be reported by its check -----------------------------------

def _env(objects: Objects, role: Role, name: str) -> dict[str, Any]:
    return next(e for e in _container(objects, role)["env"] if e["name"] == name)


def _plant_probe(objects: Objects) -> None:
    _container(objects, GATEWAY)["readinessProbe"]["httpGet"]["path"] = "/healthz"


def _plant_drain(objects: Objects) -> None:
    deployment = _find(objects, "Deployment", GATEWAY.name)
    assert deployment is not None
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 30


def _plant_secret(objects: Objects) -> None:
    env = _env(objects, GATEWAY, "OPENAI_API_KEY")
    env.pop("valueFrom")
    env["value"] = "sk-literal"


def _plant_budget(objects: Objects) -> None:
    for name, docs in objects.items():
        objects[name] = [o for o in docs if not (o["kind"] == "PodDisruptionBudget"
                                                 and o["metadata"]["name"] == INGRESS.name)]


def _plant_resources(objects: Objects) -> None:
    _container(objects, GATEWAY)["resources"]["limits"]["cpu"] = "1"


PLANTS: dict[str, Callable[[Objects], None]] = {
    "probes": _plant_probe, "drain": _plant_drain, "secrets": _plant_secret,
    "budgets": _plant_budget, "resources": _plant_resources,
}


# --- Tests ------------------------------------------------------------------------------

def test_committed_files_are_the_rendering() -> None:
    assert kubernetes.stale() == [], (
        "deploy/kubernetes is stale: run python -m callbridge.services.stack.kubernetes")


def test_a_stale_or_extra_file_is_reported(tmp_path: Path) -> None:
    for name, text in kubernetes.render().items():
        (tmp_path / name).write_text(text)
    assert kubernetes.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "gateway.yaml").write_text(
        (tmp_path / "gateway.yaml").read_text().replace("terminationGracePeriodSeconds: ",
                                                        "terminationGracePeriodSeconds: 1"))
    (tmp_path / "extra.yaml").write_text("kind: ConfigMap\n")
    assert kubernetes.stale(tmp_path) == ["gateway.yaml", "extra.yaml"]
    assert kubernetes.main(["--check", "--out", str(tmp_path)]) == 1


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((FOLDER / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(OBJECTS)
    assert kustomization["namespace"] == kubernetes.NAMESPACE
    for obj in _all(OBJECTS):
        assert obj["metadata"].get("namespace", kubernetes.NAMESPACE) == kubernetes.NAMESPACE


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_matches_the_kubernetes_schema(version: str) -> None:
    kinds = {o["kind"] for o in _all(OBJECTS)}
    assert {"Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Service",
            "ConfigMap", "StatefulSet", "Namespace"} <= kinds
    assert schema_problems(OBJECTS, version) == []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_schema_check_refuses_bad_objects(version: str) -> None:
    bad = copy.deepcopy(OBJECTS)
    container = _container(bad, GATEWAY)
    container["readinesProbe"] = container.pop("readinessProbe")         # misspelt field
    hpa = _find(bad, "HorizontalPodAutoscaler", GATEWAY.name)
    assert hpa is not None
    hpa["spec"]["minReplicas"] = "two"                                    # wrong type
    pdb = _find(bad, "PodDisruptionBudget", INGRESS.name)
    assert pdb is not None
    pdb["apiVersion"] = "policy/v1beta1"                                  # removed in 1.25
    problems = schema_problems(bad, version)
    assert any("readinesProbe" in p for p in problems), problems
    assert any("minReplicas" in p for p in problems), problems
    assert any("policy/v1beta1" in p for p in problems), problems


@pytest.mark.parametrize("check", CHECKS, ids=str)
def test_manifests_pass(check: str) -> None:
    assert CHECKS[check](OBJECTS) == []


@pytest.mark.parametrize("check", CHECKS, ids=str)
def test_check_reports_a_planted_fault(check: str) -> None:
    bad = copy.deepcopy(OBJECTS)
    PLANTS[check](bad)
    assert CHECKS[check](bad), f"{check}: planted fault not reported"


def test_gateway_grace_follows_the_drain_default(monkeypatch: pytest.MonkeyPatch) -> None:
    field = GatewaySettings.model_fields["gateway_drain_timeout_s"]
    monkeypatch.setattr(field, "default", 900.0)
    assert kubernetes.termination_grace_s(GATEWAY) > 900 + kubernetes.PRESTOP_PAUSE_S


def test_gateway_requests_come_from_the_benchmark_figures() -> None:
    requests = _container(OBJECTS, GATEWAY)["resources"]["requests"]
    calls = kubernetes.GATEWAY_CALLS_PER_POD
    assert requests["cpu"] == f"{round(calls * kubernetes.GATEWAY_CPU_PER_CALL * 1000)}m"
    env = {e["name"]: e.get("value") for e in _container(OBJECTS, GATEWAY)["env"]}
    assert env["GATEWAY_MAX_SESSIONS"] == str(calls)
    hpa = _find(OBJECTS, "HorizontalPodAutoscaler", GATEWAY.name)
    assert hpa is not None
    target = int(hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"])
    assert 0 < target < calls  # headroom: a pod at the target still admits new calls


def test_haproxy_config_is_the_compose_one_with_cluster_dns(tmp_path: Path) -> None:
    lb = _find(OBJECTS, "ConfigMap", "lb")
    assert lb is not None
    config = lb["data"]["haproxy.cfg"]
    compose = haproxy.render_compose()
    # The same edge (frontend, limits, timeouts): only discovery differs.
    frontend = compose[compose.index("frontend public"):compose.index("backend ingress")]
    assert frontend.replace("*:8000", "") in config.replace("*:8000", "")
    for role in (INGRESS, GATEWAY):
        name = f"{kubernetes.pods_service_name(role)}.{kubernetes.NAMESPACE}.svc."
        assert f"{name}{kubernetes.CLUSTER_DOMAIN}:{role.default_port} check" in config
        assert _find(OBJECTS, "Service", kubernetes.pods_service_name(role)) is not None
    binary = haproxy.haproxy_binary()
    if binary is None:
        pytest.skip("haproxy not installed")
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    haproxy.check_config(binary, path)
    path.write_text(config.replace("balance leastconn", "balance most-connections"))
    with pytest.raises(RuntimeError):
        haproxy.check_config(binary, path)


def test_kustomize_builds_the_folder() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (kustomize build is optional)")
    out = subprocess.run([kubectl, "kustomize", str(FOLDER)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    built = [d for d in yaml.safe_load_all(out) if d]
    assert len(built) == len(_all(OBJECTS))


def test_docs_name_what_the_operator_creates() -> None:
    text = DOCS.read_text()
    for key, _ in (*kubernetes.SECRET_KEYS, *kubernetes.CONFIG_KEYS):
        assert key in text, f"docs/kubernetes.md does not mention {key}"
    for name in (kubernetes.SECRET, kubernetes.CONFIG, kubernetes.PROFILES,
                 kubernetes.ACTIVE_SESSIONS_METRIC, "prometheus-adapter", "Sentinel"):
        assert name in text, f"docs/kubernetes.md does not mention {name}"
    # The figures the drain and scale sections quote.
    for role in ROLES:
        grace = kubernetes.termination_grace_s(role)
        assert f"{grace} s" in text, f"docs/kubernetes.md does not give {role.name}'s grace"
    assert f"**{kubernetes.gateway_target_calls_per_pod()} per pod**" in text
