#!/usr/bin/env bash
# Set up a fresh machine for callbridge: system packages (redis-server, haproxy) and a
# virtualenv in .venv with the locked dependencies (requirements/dev.lock), the project
# (editable) and its test tools. Safe to run again (idempotent; fast when nothing changed).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need_pkgs+=(haproxy)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[bootstrap] installing ${need_pkgs[*]} with apt-get" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
    # Debian's package starts a redis-server on 6379; ours start their own on free ports.
  else
    echo "[bootstrap] missing: ${need_pkgs[*]}. Install them (Debian/Ubuntu: sudo apt-get install ${need_pkgs[*]}; macOS: brew install redis haproxy) and run again." >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "[bootstrap] Python >= 3.11 is required (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
}
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv" >&2
  "$PY" -m venv .venv
fi
# The locked dependencies (requirements/dev.lock: runtime + sim + test extras, exact versions
# with hashes; refreshed by scripts/lock.sh), then the project itself without dependencies.
# Each step is skipped when its input did not change since its last successful run (a stamp
# in .venv holding the input's digest), so a second run takes about a second.
bash scripts/lock.sh --check || {
  echo "[bootstrap] pyproject.toml's dependencies and requirements/*.lock disagree (see above)" >&2
  exit 1
}
pip_install() {  # pip's output on failure only (--quiet keeps CI logs readable)
  local log rc=0
  log=$(.venv/bin/pip install --quiet --disable-pip-version-check "$@" 2>&1) || rc=$?
  printf '%s\n' "$log" | grep -v -e '^WARNING: Location' -e '^$' >&2 || true
  return "$rc"
}
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }
lock_stamp=.venv/.callbridge-dev-lock.sha256
lock_digest=$(digest requirements/dev.lock)
if [ "$(cat "$lock_stamp" 2>/dev/null)" != "$lock_digest" ]; then
  echo "[bootstrap] installing requirements/dev.lock (hash-checked)" >&2
  rm -f "$lock_stamp"
  pip_install --require-hashes -r requirements/dev.lock || {
    echo "[bootstrap] installing requirements/dev.lock failed (pip's output above). A hash" \
         "mismatch means a changed or corrupted download; a missing version means the lock" \
         "needs scripts/lock.sh. Offline? pip needs the package index (PIP_INDEX_URL)." >&2
    exit 1
  }
  echo "$lock_digest" > "$lock_stamp"
fi
project_stamp=.venv/.callbridge-project.sha256
project_digest=$(digest pyproject.toml)
if [ "$(cat "$project_stamp" 2>/dev/null)" != "$project_digest" ] \
   || ! .venv/bin/python -c 'import importlib.metadata as m; m.distribution("callbridge")' 2>/dev/null; then
  echo "[bootstrap] installing the project (editable, --no-deps)" >&2
  rm -f "$project_stamp"
  pip_install --no-deps -e . || {
    echo "[bootstrap] installing the project failed (pip's output above)" >&2
    exit 1
  }
  echo "$project_digest" > "$project_stamp"
fi
.venv/bin/python -c 'import callbridge.services.cli, arq, redis, aiohttp, websockets, soxr' \
  || { echo "[bootstrap] the virtualenv is incomplete; see pip's output above" >&2; exit 1; }
echo "[bootstrap] ready: $(.venv/bin/python --version), $(redis-server --version | cut -d' ' -f3)" >&2
