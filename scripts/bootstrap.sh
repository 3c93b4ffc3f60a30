#!/usr/bin/env bash
# Set up a fresh machine for callbridge: system packages (redis-server, haproxy) and a
# virtualenv in .venv with the project and its test tools. Safe to run again (idempotent).
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
# --quiet keeps CI logs readable; pip still prints errors.
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' >&2 || true
.venv/bin/python -c 'import services.cli, arq, redis, aiohttp, websockets, soxr' \
  || { echo "[bootstrap] the virtualenv is incomplete; see pip's output above" >&2; exit 1; }
echo "[bootstrap] ready: $(.venv/bin/python --version), $(redis-server --version | cut -d' ' -f3)" >&2
