#!/usr/bin/env bash
# Lock files: exact versions with hashes for everything pyproject.toml declares, which CI, the
# demo (scripts/bootstrap.sh) and the container image (Dockerfile) install from.
#
#   requirements/dev.lock      runtime + the `sim` and `test` extras  (scripts/bootstrap.sh)
#   requirements/runtime.lock  runtime dependencies only             (Dockerfile, the image)
#
#   scripts/lock.sh            refresh both after editing pyproject.toml's dependencies; every
#                              version already locked is kept when it still fits (network)
#   scripts/lock.sh --upgrade  move everything to the newest versions pyproject allows (network)
#   scripts/lock.sh --upgrade-package NAME   only NAME (repeatable)
#   scripts/lock.sh --check    fail when pyproject's dependencies (or this script's resolution
#                              options) changed since the locks were written; no network, no uv,
#                              milliseconds (scripts/bootstrap.sh runs it, so CI does)
#   scripts/lock.sh --check-resolve   --check, then resolve again into a temporary directory
#                              and fail when the result differs from the committed locks
#                              (network: catches a yanked release or a lock edited by hand)
#
# Tool: uv's `pip compile` (pinned below; installed into .venv when missing). One universal
# resolution for CPython 3.11+ on every platform: environment markers stay in the lock
# (e.g. redis's `async-timeout; python_full_version < "3.11.3"`), so the same file installs on
# the image's Debian 3.11.2 and a developer's newer 3.11, and pip skips what a marker excludes.
# `--fork-strategy fewest`: one version per package for every Python the lock serves (not a
# newer numpy only for 3.12+), so every Python runs what CI tested on 3.11.
# runtime.lock is resolved with dev.lock as constraints: the image runs exactly the versions
# the test suite ran. Each lock starts with `# inputs-sha256:`, a digest of pyproject's
# requires-python, dependencies and optional-dependencies (not its other sections) and of the
# options below; --check compares it.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
OPTIONS=(--universal --python-version 3.11 --fork-strategy fewest --generate-hashes
         --no-strip-markers
         --custom-compile-command "scripts/lock.sh")
DEV=requirements/dev.lock
RUNTIME=requirements/runtime.lock

MODE=lock
UPGRADE=()
while [ $# -gt 0 ]; do
  case "$1" in
    --check) MODE=check ;;
    --check-resolve) MODE=check-resolve ;;
    --upgrade) UPGRADE+=(--upgrade) ;;
    --upgrade-package) [ $# -ge 2 ] || { echo "lock: --upgrade-package needs a name" >&2; exit 2; }
                       UPGRADE+=(--upgrade-package "$2"); shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "lock: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python

# The digest of what the locks are resolved from; the same in both locks.
inputs_digest() {
  "$PY" - "${OPTIONS[*]}" <<'EOF'
import hashlib, json, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
inputs = {
    "requires-python": project.get("requires-python"),
    "dependencies": project.get("dependencies", []),
    "optional-dependencies": project.get("optional-dependencies", {}),
    "options": sys.argv[1],
}
print(hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest())
EOF
}

check_inputs() {
  local want got f rc=0
  want=$(inputs_digest)
  for f in "$DEV" "$RUNTIME"; do
    if [ ! -s "$f" ]; then
      echo "lock: $f is missing: run scripts/lock.sh" >&2; rc=1; continue
    fi
    got=$(sed -n 's/^# inputs-sha256: //p' "$f" | head -n 1)
    if [ "$got" != "$want" ]; then
      echo "lock: $f is stale: pyproject.toml's dependencies changed since it was written." >&2
      echo "      Run scripts/lock.sh (network) and commit requirements/*.lock with pyproject.toml." >&2
      rc=1
    fi
  done
  return "$rc"
}

if [ "$MODE" = check ]; then
  check_inputs
  echo "lock: requirements/*.lock match pyproject.toml's dependencies" >&2
  exit 0
fi

UV=.venv/bin/uv
if [ ! -x "$UV" ] || [ "$("$UV" --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  [ -x .venv/bin/pip ] || { echo "lock: no .venv: run scripts/bootstrap.sh first" >&2; exit 1; }
  echo "lock: installing uv $UV_VERSION into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check "uv==$UV_VERSION" 2>&1 \
    | grep -v '^WARNING: Location' >&2 || true
  [ -x "$UV" ] || { echo "lock: could not install uv $UV_VERSION (see pip's output)" >&2; exit 1; }
fi

# compile OUT_DIR: both locks into OUT_DIR, the locks already there serving as preferences
# (kept unless --upgrade).
compile() {
  local out=$1 digest
  digest=$(inputs_digest)
  "$UV" pip compile --quiet "${OPTIONS[@]}" "${UPGRADE[@]}" \
    pyproject.toml --extra sim --extra test -o "$out/dev.lock"
  # Dev pins as constraints: the image gets exactly the versions the tests ran with.
  "$UV" pip compile --quiet "${OPTIONS[@]}" "${UPGRADE[@]}" \
    pyproject.toml -c "$out/dev.lock" -o "$out/runtime.lock"
  for f in "$out/dev.lock" "$out/runtime.lock"; do
    # uv names the constraint file by the path it was given; name the committed one.
    sed -i -e "1i # inputs-sha256: $digest" -e '/^# inputs-sha256: /d' \
        -e "s|-c $out/dev.lock|-c $DEV|" "$f"
  done
}

mkdir -p requirements
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
[ -f "$DEV" ] && cp "$DEV" "$TMP/dev.lock"
[ -f "$RUNTIME" ] && cp "$RUNTIME" "$TMP/runtime.lock"
started=$(date +%s)
compile "$TMP"

if [ "$MODE" = check-resolve ]; then
  check_inputs
  rc=0
  for f in dev runtime; do
    diff -u "requirements/$f.lock" "$TMP/$f.lock" >&2 || rc=1
  done
  [ "$rc" = 0 ] && echo "lock: a fresh resolution reproduces requirements/*.lock" >&2 \
    || echo "lock: a fresh resolution differs from requirements/*.lock (diff above): run scripts/lock.sh" >&2
  exit "$rc"
fi

cp "$TMP/dev.lock" "$DEV"
cp "$TMP/runtime.lock" "$RUNTIME"
echo "lock: wrote $DEV ($(grep -c '^[a-z0-9]' "$DEV") packages) and $RUNTIME" \
     "($(grep -c '^[a-z0-9]' "$RUNTIME") packages) in $(( $(date +%s) - started ))s" >&2
