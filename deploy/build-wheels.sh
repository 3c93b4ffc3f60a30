#!/usr/bin/env bash
# Wheels for the container image, built on the host: the project and every runtime dependency
# land in deploy/wheels/, and the Dockerfile's builder stage installs them with --no-index, so
# `docker build` downloads nothing (the air-gapped path: containers here cannot reach a
# package index; the host can, through its own pip configuration and CA bundle).
#
#   deploy/build-wheels.sh            # dependencies only when their pins changed; project always
#   deploy/build-wheels.sh --clean    # start from an empty deploy/wheels
#
# Versions: pinned to what the project's .venv runs (`pip list --format=freeze`), i.e. the
# versions the test suite passed with. Without a .venv, a throwaway venv resolves them fresh.
# The image's interpreter is CPython 3.11 on glibc 2.36 (Debian bookworm): the host's venv
# must be a 3.11 too, and every wheel must be pure Python or manylinux (checked below).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=deploy/wheels
CLEAN=0
for arg in "$@"; do
  case "$arg" in
    --clean) CLEAN=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build-wheels: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done
log() { printf '[build-wheels %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
started=$(date +%s)
mkdir -p "$OUT"
[ "$CLEAN" = 1 ] && rm -f "$OUT"/*.whl "$OUT/.deps-key"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if [ -x .venv/bin/pip ]; then
  PY=.venv/bin/python
  # The tested versions (the project itself is installed editable, so it is not listed).
  "$PY" -m pip list --format=freeze --exclude-editable 2>/dev/null \
    | grep -v -i '^callbridge==' > "$TMP/constraints.txt"
else
  log "no .venv: resolving in a throwaway venv"
  python3 -m venv "$TMP/venv"
  PY=$TMP/venv/bin/python
  : > "$TMP/constraints.txt"
fi
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "build-wheels: $("$PY" --version) here; the image runs Python 3.11 (set up .venv with 3.11)" >&2
  exit 1
}

# Build from a copy of what the Dockerfile copies, so the working tree gets no build/ or
# egg-info debris (and the wheel holds exactly the image's sources).
mkdir -p "$TMP/src"
tar --exclude=__pycache__ -cf - pyproject.toml README.md services shared simulators \
  | tar -C "$TMP/src" -xf -

# Dependencies: rebuilt only when pyproject.toml's dependencies or the pins change.
key=$( { sed -n '/^dependencies = \[/,/^\]/p' pyproject.toml; cat "$TMP/constraints.txt"; } \
       | sha256sum | cut -c1-16)
if [ -s "$OUT/.deps-key" ] && [ "$(cat "$OUT/.deps-key")" = "$key" ] \
   && ls "$OUT"/*.whl >/dev/null 2>&1; then
  log "dependency wheels up to date ($(ls "$OUT"/*.whl | grep -vc '/callbridge-') files)"
else
  log "building dependency wheels (pinned to $PY's versions)"
  find "$OUT" -name '*.whl' ! -name 'callbridge-*' -delete
  # Resolve the project's runtime requirements under the pins; --no-deps for the project
  # wheel itself is done below, so here only its dependencies are kept.
  "$PY" -m pip wheel --quiet --disable-pip-version-check -c "$TMP/constraints.txt" \
    --wheel-dir "$TMP/deps" "$TMP/src"
  find "$TMP/deps" -name 'callbridge-*' -delete
  mv "$TMP"/deps/*.whl "$OUT"/
  echo "$key" > "$OUT/.deps-key"
fi

log "building the callbridge wheel"
rm -f "$OUT"/callbridge-*.whl
"$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$OUT" "$TMP/src"

# Every wheel must install on the image's CPython 3.11 / glibc 2.36 without a compiler.
bad=$(ls "$OUT"/*.whl | grep -Ev -- '-(py3|py2\.py3|cp311)-(none|abi3|cp311)-(any|manylinux[^/]*x86_64)\.whl$' || true)
if [ -n "$bad" ]; then
  echo "build-wheels: wheels the image may not install (not pure Python or manylinux cp311):" >&2
  echo "$bad" >&2
  exit 1
fi
log "$(ls "$OUT"/*.whl | wc -l) wheels, $(du -ch "$OUT"/*.whl | tail -1 | cut -f1) in $OUT, $(( $(date +%s) - started ))s"
