"""The locked dependencies and the production image's contents, checked without a network.

requirements/runtime.lock (what the image installs) and requirements/dev.lock (what
scripts/bootstrap.sh installs: runtime + `sim` + `test`) must pin, with hashes, every
dependency pyproject.toml declares, at versions its ranges allow, with everything those pins
need on both Pythons the lock serves (the image's 3.11.2, where redis needs async-timeout, and
a newer 3.11); the image must carry neither the simulators nor the benchmarks, and the
services must not import them (or their PyPI packages) when they load.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
NAME = canonicalize_name(PROJECT["name"])
RUNTIME_LOCK = ROOT / "requirements" / "runtime.lock"
DEV_LOCK = ROOT / "requirements" / "dev.lock"
LOCK_SH = ROOT / "scripts" / "lock.sh"
#: Packages only the simulators, benchmarks and tests use: never imported when `services` or
#: `shared` load (the image has none of them).
NOT_IN_IMAGE = {"callbridge.simulators", "simulators", "bench", "tests", "openai", "jsonschema",
                "pytest", "hypothesis", "yaml", "testcontainers"}


@dataclass(frozen=True)
class Pin:
    requirement: Requirement
    hashes: tuple[str, ...]

    @property
    def version(self) -> Version:
        (spec,) = self.requirement.specifier
        return Version(spec.version)


def _here() -> dict[str, str]:
    """This interpreter's marker environment."""
    return {key: str(value) for key, value in default_environment().items()}


def _environment(python_full_version: str) -> dict[str, str]:
    env = _here()
    env.update(python_full_version=python_full_version,
               python_version=".".join(python_full_version.split(".")[:2]),
               implementation_name="cpython", platform_python_implementation="CPython",
               implementation_version=python_full_version, sys_platform="linux",
               platform_system="Linux", os_name="posix", platform_machine="x86_64")
    return env


#: The image's Debian bookworm Python and the host's: the lock must serve both.
ENVIRONMENTS = {"3.11.2": _environment("3.11.2"), "3.11.7": _environment("3.11.7")}


Lock = dict[str, list[Pin]]  # a package may be pinned once per marker fork


def parse_lock(path: Path) -> Lock:
    text = path.read_text().replace("\\\n", " ")
    pins: Lock = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        hashes = tuple(re.findall(r"--hash=(sha256:[0-9a-f]{64})", line))
        spec = re.sub(r"\s--hash=\S+", "", line).strip()
        assert not spec.startswith("-"), f"{path.name}: unexpected option line {line!r}"
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        pins.setdefault(name, []).append(Pin(req, hashes))
    return pins


def pin_for(lock: Lock, name: str, env: dict[str, str]) -> Pin | None:
    """The pin of `name` that pip would install in `env` (None: the lock has none there)."""
    matching = [pin for pin in lock.get(name, [])
                if pin.requirement.marker is None or pin.requirement.marker.evaluate(env)]
    assert len(matching) <= 1, f"{name}: several pins apply to one environment: {matching}"
    return matching[0] if matching else None


RUNTIME = parse_lock(RUNTIME_LOCK)
DEV = parse_lock(DEV_LOCK)


def declared(*extras: str) -> list[Requirement]:
    """pyproject's runtime dependencies plus those of `extras`, self-references expanded."""
    out = [Requirement(r) for r in PROJECT["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in PROJECT["optional-dependencies"][extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == NAME:
                todo.extend(req.extras)
            else:
                out.append(req)
    return out


RUNTIME_DECLARED = declared()
DEV_DECLARED = declared("sim", "test")


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK], ids=lambda p: p.name)
def test_every_pin_is_exact_and_hashed(lock: Path) -> None:
    pins = parse_lock(lock)
    assert pins, f"{lock} pins nothing"
    for name, pin in ((name, pin) for name, forks in pins.items() for pin in forks):
        specs = list(pin.requirement.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{lock.name}: {name} not pinned"
        assert "*" not in specs[0].version, f"{lock.name}: {name} pinned with a wildcard"
        assert pin.hashes, f"{lock.name}: {name} has no --hash (pip --require-hashes refuses)"
        assert not pin.requirement.extras and pin.requirement.url is None, name


@pytest.mark.parametrize(("lock", "requirements"),
                         [(RUNTIME_LOCK, RUNTIME_DECLARED), (DEV_LOCK, DEV_DECLARED)],
                         ids=["runtime", "dev"])
def test_every_declared_dependency_is_pinned_within_its_range(
        lock: Path, requirements: list[Requirement]) -> None:
    pins = parse_lock(lock)
    for req in requirements:
        name = canonicalize_name(req.name)
        for label, env in ENVIRONMENTS.items():
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            pin = pin_for(pins, name, env)
            assert pin is not None, (f"{lock.name} does not pin {req} for Python {label} on "
                                     "Linux: run scripts/lock.sh")
            assert req.specifier.contains(pin.version, prereleases=True), (
                f"{lock.name}: {name}=={pin.version} is outside pyproject's {req}")


def test_runtime_lock_has_the_runtime_dependencies_only() -> None:
    declared_names = {canonicalize_name(r.name) for r in RUNTIME_DECLARED}
    sim_only = {canonicalize_name(Requirement(r).name)
                for r in PROJECT["optional-dependencies"]["sim"]} - declared_names
    assert sim_only, "the sim extra declares nothing beyond the runtime dependencies"
    assert not sim_only & RUNTIME.keys(), f"the image would carry {sim_only & RUNTIME.keys()}"
    for name in ("pytest", "hypothesis", "mypy", "ruff", "testcontainers"):
        assert name not in RUNTIME


def test_test_extra_includes_the_sim_extra() -> None:
    sim = {canonicalize_name(Requirement(r).name)
           for r in PROJECT["optional-dependencies"]["sim"]}
    assert {"openai", "jsonschema"} <= sim
    test_names = {canonicalize_name(r.name) for r in declared("test")}
    assert sim <= test_names


def test_runtime_pins_are_the_dev_pins() -> None:
    """The image runs exactly the versions the test suite ran with."""
    for name, forks in RUNTIME.items():
        for pin in forks:
            dev = {(str(p.version), str(p.requirement.marker)): p for p in DEV.get(name, [])}
            match = dev.get((str(pin.version), str(pin.requirement.marker)))
            assert match is not None, f"runtime.lock's {pin.requirement} is not in dev.lock"
            assert set(pin.hashes) == set(match.hashes), f"{name}: hashes differ"


def _closure(roots: list[Requirement], env: dict[str, str]) -> list[tuple[str, Requirement]]:
    """Every requirement that `roots` pull in on `env`, with extras, as (who needs it, what):
    read from the installed distributions' metadata, which is the locked versions' when the
    venv was installed from the lock (the caller checks)."""
    needs: list[tuple[str, Requirement]] = []
    todo = [("pyproject.toml", r) for r in roots if r.marker is None or r.marker.evaluate(env)]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        parent, req = todo.pop()
        needs.append((parent, req))
        name = canonicalize_name(req.name)
        extras = frozenset(canonicalize_name(e) for e in req.extras)
        if (name, extras) in done or name == NAME:
            continue
        done.add((name, extras))
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed on this Python (async-timeout): a leaf for this check
        for text in dist.requires or []:
            dep = Requirement(text)
            if dep.marker is None or any(dep.marker.evaluate({**env, "extra": extra})
                                         for extra in {"", *extras}):
                todo.append((name, dep))
    return needs


@pytest.mark.parametrize("python", list(ENVIRONMENTS))
@pytest.mark.parametrize("which", ["runtime", "dev"])
def test_the_pins_need_nothing_unlocked(python: str, which: str) -> None:
    """A dependency of a pinned package (with a marker true on that Python: redis's
    async-timeout below 3.11.3) missing from the lock would make pip --require-hashes fail."""
    pins, roots = (RUNTIME, RUNTIME_DECLARED) if which == "runtime" else (DEV, DEV_DECLARED)
    env = ENVIRONMENTS[python]
    installed: dict[str, str] = {canonicalize_name(d.metadata["Name"]): d.version
                                 for d in importlib.metadata.distributions()}
    here = _here()
    for name in pins:
        pin = pin_for(pins, name, here)
        if pin is None:
            continue
        if installed.get(name) is None or Version(installed[name]) != pin.version:
            pytest.skip(f"this venv does not run the locked {name} (bootstrap first)")
    for parent, req in _closure(roots, env):
        name = canonicalize_name(req.name)
        if name == NAME:
            continue
        pin = pin_for(pins, name, env)
        assert pin is not None, f"{parent} needs {req} on Python {python}: not in the lock " \
                                "(or its marker there leaves it out)"
        assert req.specifier.contains(pin.version, prereleases=True), (
            f"{parent} needs {req}; the lock has {pin.version}")


def test_async_timeout_only_for_the_images_python() -> None:
    assert "async-timeout" in RUNTIME, "redis needs async-timeout on the image's 3.11.2"
    assert pin_for(RUNTIME, "async-timeout", ENVIRONMENTS["3.11.2"]) is not None
    assert pin_for(RUNTIME, "async-timeout", ENVIRONMENTS["3.11.7"]) is None


def test_this_venv_runs_the_locked_versions() -> None:
    env = _here()
    drift = []
    for name in DEV:
        pin = pin_for(DEV, name, env)
        if pin is None:
            continue
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            drift.append(f"{name} (not installed)")
            continue
        if Version(version) != pin.version:
            drift.append(f"{name} {version} (lock {pin.version})")
    assert not drift, ("the venv differs from requirements/dev.lock: " + ", ".join(drift)
                       + "; run scripts/bootstrap.sh")


# scripts/lock.sh --check: offline, catches pyproject edited without refreshing the locks ----

def _lock_check(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", str(root / "scripts" / "lock.sh"), "--check"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=60)


def test_lock_check_passes_on_the_committed_locks() -> None:
    result = _lock_check(ROOT)
    assert result.returncode == 0, result.stderr


def test_lock_check_fails_when_pyproject_dependencies_change(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(LOCK_SH, tmp_path / "scripts" / "lock.sh")
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    text = (ROOT / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(text)
    assert _lock_check(tmp_path).returncode == 0
    # A non-dependency section changing does not make the locks stale...
    (tmp_path / "pyproject.toml").write_text(text.replace(
        "[tool.ruff]", "[tool.ruff]\n# a comment"))
    assert _lock_check(tmp_path).returncode == 0
    # ...a dependency does.
    changed = text.replace('"rich>=13"', '"rich>=13.1"')
    assert changed != text
    (tmp_path / "pyproject.toml").write_text(changed)
    result = _lock_check(tmp_path)
    assert result.returncode == 1 and "stale" in result.stderr, result.stderr


# The production image -----------------------------------------------------------------------

def _dockerfile_instructions() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_copies_neither_simulators_nor_bench() -> None:
    copies = [line for line in _dockerfile_instructions() if line.upper().startswith(("COPY",
                                                                                      "ADD"))]
    sources: set[str] = set()
    for line in copies:
        words = [w for w in line.split()[1:] if not w.startswith("--")]
        sources.update(w.rstrip("/") for w in words[:-1])
    assert "." not in sources and "./" not in sources, "COPY . would bring everything"
    assert not {s for s in sources if re.match(r"(\./)?(simulators|bench|tests)\b", s)}, sources
    assert {"services", "shared"} <= {s.removeprefix("./") for s in sources}, sources
    # the package folder's links are made in the build, or its simulators link would come
    assert "callbridge" not in {s.removeprefix("./") for s in sources}, sources


def test_dockerfile_installs_the_runtime_lock_with_hashes() -> None:
    runs = " ".join(line for line in _dockerfile_instructions() if line.startswith("RUN"))
    installs = re.findall(r"pip install[^;&]*", runs)
    locked = [i for i in installs if "-r requirements/runtime.lock" in i]
    assert locked and all("--require-hashes" in i for i in locked), installs
    project = [i for i in installs if re.search(r"\s\.\s*$", i)]
    assert project and all("--no-deps" in i for i in project), installs
    assert 'import $pkg' in runs and "callbridge.simulators bench" in runs, \
        "the image build no longer fails when simulators/bench are importable"


def test_dockerignore_keeps_simulators_and_bench_out_of_the_context() -> None:
    lines = {line.strip().rstrip("/") for line in
             (ROOT / ".dockerignore").read_text().splitlines()}
    assert {"simulators", "bench"} <= lines
    assert not {"requirements", "requirements/runtime.lock", "services", "shared"} & lines


def _root(module: str) -> str:
    """The distribution-level name: `callbridge.simulators.x` -> `callbridge.simulators`,
    `openai.types` -> `openai`."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "callbridge" and len(parts) > 1 else parts[0]


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported when `path` loads (not inside functions or `if TYPE_CHECKING`)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(_root(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(_root(node.module))
            elif isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, (ast.Try, ast.With)):
                visit(node.body)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return found


def test_services_do_not_import_simulators_or_their_packages_when_loaded() -> None:
    offenders = []
    for package in ("services", "shared"):
        for path in sorted((ROOT / package).rglob("*.py")):
            bad = _top_level_imports(path) & NOT_IN_IMAGE
            if bad:
                offenders.append(f"{path.relative_to(ROOT)}: {sorted(bad)}")
    assert not offenders, "the image has no simulators/test packages: " + "; ".join(offenders)


_WITHOUT_SIMULATORS = """
import sys
sys.modules["callbridge.simulators"] = None  # as in the production image: not importable
from callbridge.services.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli_without_simulators(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _WITHOUT_SIMULATORS, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_help_works_without_the_simulators() -> None:
    result = _cli_without_simulators("--help")
    assert result.returncode == 0, result.stderr
    assert "sim " in result.stdout and "demo" in result.stdout and "gateway" in result.stdout


@pytest.mark.parametrize("argv", [("sim", "infobip", "--port", "1"), ("sim", "--help"),
                                  ("sim",), ("demo",)], ids=" ".join)
def test_simulator_commands_say_where_to_run_them(argv: tuple[str, ...]) -> None:
    result = _cli_without_simulators(*argv)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "the simulators are not installed in this image" in result.stderr
    assert "source checkout" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.timeout(300)
def test_the_wheel_installs_only_the_callbridge_package(tmp_path: Path) -> None:
    """`pip install` puts one name at the top of site-packages, `callbridge` (plus its
    dist-info and the console script), holding the services, shared and the simulators as
    real files (setuptools follows the package's links)."""
    import zipfile

    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path / "source"
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    for name in ("callbridge", "services", "shared", "simulators"):
        shutil.copytree(ROOT / name, source / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps",
         "--wheel-dir", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=280)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (wheel,) = tmp_path.glob("callbridge-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names
                            if n.endswith(".dist-info/entry_points.txt"))
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"callbridge"}, sorted(tops)
    for module in ("callbridge/__init__.py", "callbridge/services/cli.py",
                   "callbridge/shared/redis_keys.py", "callbridge/simulators/__init__.py",
                   "callbridge/services/media_gateway/assets/max_duration.wav"):
        assert module in names, module
    assert "callbridge = callbridge.services.cli:main" in entry_points
