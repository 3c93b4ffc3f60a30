"""Node for the anchors: find `node` and `npm`, install the locked dependencies once.

The dependencies (`ws`, `express`, exact versions) are locked in package-lock.json beside
this file and installed with `npm ci` (https://docs.npmjs.com/cli/commands/npm-ci) into a
cache folder keyed by the lock's hash - never into the repository - so a second run starts at
once and a changed lock gets a fresh install. The scripts stay in the repository and find the
packages through NODE_PATH (https://nodejs.org/api/modules.html#loading-from-the-global-folders).

    python -m bench.anchors.node          # install (if needed) and print the node_modules path

A benchmark that needs Node calls `node_command()`; when `node` or `npm` is missing, or the
install fails, it raises `NodeUnavailable` with a message saying why, and the benchmark
skips its Node anchor.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ANCHORS = Path(__file__).resolve().parent
LOCK_FILES = ("package.json", "package-lock.json")
#: Where `npm ci` installs; CALLBRIDGE_BENCH_CACHE moves it (e.g. to a CI cache directory).
CACHE = Path(os.environ.get("CALLBRIDGE_BENCH_CACHE",
                            Path.home() / ".cache" / "callbridge-bench")) / "node"
MIN_NODE_MAJOR = 20
INSTALL_TIMEOUT_S = 300


class NodeUnavailable(RuntimeError):
    """Node, npm or the locked packages cannot be had here: the Node anchor is skipped."""


def _node_major(node: str) -> int:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30,
                         check=False).stdout.strip()
    try:
        return int(out.lstrip("v").split(".")[0])
    except ValueError:
        return 0


def node_modules() -> Path:
    """The cache folder's node_modules for the current lock, installed with `npm ci` if
    it is not there yet. Raises NodeUnavailable (with the reason) when that cannot be done."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if p is None)
        raise NodeUnavailable(f"{missing} not found on PATH: install Node.js >= "
                              f"{MIN_NODE_MAJOR} with npm to measure the Node anchors")
    if _node_major(node) < MIN_NODE_MAJOR:
        raise NodeUnavailable(f"node is older than v{MIN_NODE_MAJOR}: the anchors need "
                              f"Node.js >= {MIN_NODE_MAJOR}")
    digest = hashlib.sha256(b"".join((ANCHORS / f).read_bytes() for f in LOCK_FILES))
    target = CACHE / digest.hexdigest()[:16]
    done = target / ".installed"
    if done.exists():
        return target / "node_modules"
    target.mkdir(parents=True, exist_ok=True)
    for name in LOCK_FILES:
        shutil.copyfile(ANCHORS / name, target / name)
    print(f"  installing the Node anchors' packages (npm ci) into {target}", file=sys.stderr)
    try:
        proc = subprocess.run(
            [npm, "ci", "--omit=dev", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=target, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NodeUnavailable(f"npm ci did not finish within {INSTALL_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise NodeUnavailable(f"npm ci failed (exit {proc.returncode}) in {target}:\n{tail}")
    done.write_text("ok\n")
    return target / "node_modules"


def node_command(script: str) -> tuple[list[str], dict[str, str]]:
    """The command running `bench/anchors/<script>` and the environment additions it needs
    (NODE_PATH to the installed packages). Raises NodeUnavailable."""
    modules = node_modules()
    node = shutil.which("node")
    assert node is not None  # node_modules() checked it
    return [node, str(ANCHORS / script)], {"NODE_PATH": str(modules)}


def main() -> int:
    try:
        print(node_modules())
    except NodeUnavailable as exc:
        print(f"skipped: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
