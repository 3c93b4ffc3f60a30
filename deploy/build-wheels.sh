#!/usr/bin/env bash
# Wheels for the container image: the project and every runtime dependency land in
# deploy/wheels/, and the Dockerfile's builder stage installs them with --no-index, so
# `docker build` downloads nothing (the air-gapped path; see deploy/README.md).
#
#   deploy/build-wheels.sh            # dependencies only when their inputs changed; project always
#   deploy/build-wheels.sh --clean    # start from an empty deploy/wheels
#
# Why dependencies are resolved INSIDE the base image (python:3.11-slim) rather than by the
# host's venv: environment markers are evaluated against the resolving interpreter. The host's
# venv may be a newer 3.11 than the image's (here 3.11.7 vs Debian bookworm's 3.11.2), and
# e.g. `redis` needs `async-timeout; python_full_version < "3.11.3"` only on the older one:
# resolved on the host, the image would lack it. So: the project wheel (pure Python) is built
# on the host; its dependencies are resolved by the image's own pip, binary wheels only (no
# compiler anywhere), pinned to the versions the project's .venv runs (the tested ones).
# That one container reaches the package index through the host's network and the host's CA
# bundle (pip's `cert`), and PIP_INDEX_URL / PIP_EXTRA_INDEX_URL are passed through when set.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=deploy/wheels
BASE_IMAGE=${PYTHON_IMAGE:-python:3.11-slim}
CLEAN=0
for arg in "$@"; do
  case "$arg" in
    --clean) CLEAN=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "build-wheels: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done
log() { printf '[build-wheels %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
started=$(date +%s)
mkdir -p "$OUT"
[ "$CLEAN" = 1 ] && rm -f "$OUT"/*.whl "$OUT/.deps-key"
docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || {
  echo "build-wheels: no $BASE_IMAGE image (pull it, or deploy/offline-images.sh builds it)" >&2
  exit 1
}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
HOST_PY=python3
[ -x .venv/bin/python ] && HOST_PY=.venv/bin/python

# 1. The project wheel, on the host, from a copy of exactly what the Dockerfile copies (no
#    build/ or egg-info debris in the working tree).
log "building the callbridge wheel ($HOST_PY)"
mkdir -p "$TMP/src"
tar --exclude=__pycache__ -cf - pyproject.toml README.md services shared simulators \
  | tar -C "$TMP/src" -xf -
rm -f "$OUT"/callbridge-*.whl
if ! "$HOST_PY" -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$OUT" \
     "$TMP/src" 2> "$TMP/pip.err"; then
  cat "$TMP/pip.err" >&2
  exit 1
fi

# 2. The dependencies, pinned to the tested versions when the project's .venv exists.
if [ -x .venv/bin/python ]; then
  .venv/bin/python -m pip list --format=freeze --exclude-editable 2>/dev/null \
    | grep -v -i '^callbridge==' > "$TMP/constraints.txt"
else
  : > "$TMP/constraints.txt"
fi
image_id=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")
key=$( { sed -n '/^dependencies = \[/,/^\]/p' pyproject.toml; cat "$TMP/constraints.txt";
         echo "$image_id"; } | sha256sum | cut -c1-16)
if [ -s "$OUT/.deps-key" ] && [ "$(cat "$OUT/.deps-key")" = "$key" ]; then
  log "dependency wheels up to date ($(find "$OUT" -name '*.whl' ! -name 'callbridge-*' | wc -l) files)"
else
  cert=${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null || true)}
  [ -n "$cert" ] && [ -f "$cert" ] || cert=/etc/ssl/certs/ca-certificates.crt
  log "resolving dependencies with $BASE_IMAGE's pip (binary wheels only, CA bundle $cert)"
  mkdir -p "$TMP/deps"
  chmod 777 "$TMP/deps"
  docker run --rm --network host \
    -v "$PWD/$OUT:/wheels:ro" -v "$TMP/deps:/out" -v "$TMP/constraints.txt:/constraints.txt:ro" \
    -v "$cert:/host-ca.crt:ro" -e PIP_CERT=/host-ca.crt \
    -e PIP_INDEX_URL -e PIP_EXTRA_INDEX_URL -e PIP_DISABLE_PIP_VERSION_CHECK=1 \
    -e PIP_DEFAULT_TIMEOUT=60 -e PIP_NO_CACHE_DIR=1 \
    "$BASE_IMAGE" sh -ec '
      python -m venv /tmp/venv
      /tmp/venv/bin/pip wheel --quiet --only-binary=:all: -c /constraints.txt \
        --find-links /wheels --wheel-dir /out callbridge'
  find "$OUT" -name '*.whl' ! -name 'callbridge-*' -delete
  find "$TMP/deps" -name '*.whl' ! -name 'callbridge-*' -exec mv {} "$OUT"/ \;
  echo "$key" > "$OUT/.deps-key"
fi

# 3. Every wheel must install on the image's CPython 3.11 without a compiler.
bad=$(find "$OUT" -name '*.whl' | grep -Ev -- \
      '-(py3|py2\.py3|cp311)-(none|abi3|cp311)-(any|manylinux[^/]*x86_64)\.whl$' || true)
if [ -n "$bad" ]; then
  echo "build-wheels: wheels the image may not install (not pure Python or manylinux cp311):" >&2
  echo "$bad" >&2
  exit 1
fi
log "$(find "$OUT" -name '*.whl' | wc -l) wheels, $(du -ch "$OUT"/*.whl | tail -1 | cut -f1) in $OUT, $(( $(date +%s) - started ))s"
