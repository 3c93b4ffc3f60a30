#!/usr/bin/env bash
# Wheels for the container image, so `docker build` downloads nothing (the air-gapped path;
# see deploy/README.md). Writes deploy/wheels/:
#   *.whl              every runtime dependency of the project, plus its build backend
#                      (setuptools, wheel) so the builder stage can build the project offline
#   requirements.txt   pyproject.toml's runtime dependencies, which the Dockerfile installs
#                      (--no-index) in a layer of their own, before copying the sources
#
#   deploy/build-wheels.sh            # re-resolves only when its inputs changed
#   deploy/build-wheels.sh --clean    # start from an empty deploy/wheels
#
# Resolved INSIDE the base image (python:3.11-slim), not by the host's venv: environment
# markers are evaluated against the resolving interpreter, and the host's venv may be a newer
# 3.11 than the image's (here 3.11.7 vs Debian bookworm's 3.11.2). `redis` needs
# `async-timeout; python_full_version < "3.11.3"` only on the older one: resolved on the host,
# the image would lack it. Binary wheels only (no compiler anywhere), pinned to the versions
# the project's .venv runs (the ones the test suite passed with). That one container reaches
# the package index through the host's network and the host's CA bundle (pip's `cert`);
# PIP_INDEX_URL / PIP_EXTRA_INDEX_URL are passed through when set.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=deploy/wheels
BASE_IMAGE=${PYTHON_IMAGE:-python:3.11-slim}
CLEAN=0
for arg in "$@"; do
  case "$arg" in
    --clean) CLEAN=1 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "build-wheels: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done
log() { printf '[build-wheels %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
started=$(date +%s)
mkdir -p "$OUT"
[ "$CLEAN" = 1 ] && rm -f "$OUT"/*.whl "$OUT/requirements.txt" "$OUT/.inputs-key"
docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || {
  echo "build-wheels: no $BASE_IMAGE image (pull it, or deploy/offline-images.sh builds it)" >&2
  exit 1
}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# The tested versions; pip/setuptools/wheel are the venv's own tools, not pins for the image
# (the build backend must satisfy pyproject's build-system requirement instead).
if [ -x .venv/bin/python ]; then
  .venv/bin/python -m pip list --format=freeze --exclude-editable 2>/dev/null \
    | grep -v -i -E '^(callbridge|pip|setuptools|wheel)==' > "$TMP/constraints.txt"
else
  : > "$TMP/constraints.txt"
fi
cp pyproject.toml "$TMP/pyproject.toml"

key=$( { cat pyproject.toml "$TMP/constraints.txt"; docker image inspect -f '{{.Id}}' "$BASE_IMAGE"; } \
       | sha256sum | cut -c1-16)
if [ -s "$OUT/.inputs-key" ] && [ "$(cat "$OUT/.inputs-key")" = "$key" ] \
   && [ -s "$OUT/requirements.txt" ] && ls "$OUT"/*.whl >/dev/null 2>&1; then
  log "up to date: $(find "$OUT" -name '*.whl' | wc -l) wheels in $OUT (inputs unchanged)"
  exit 0
fi

cert=${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null || true)}
[ -n "$cert" ] && [ -f "$cert" ] || cert=/etc/ssl/certs/ca-certificates.crt
log "resolving with $BASE_IMAGE's pip: binary wheels only, pinned to .venv, CA bundle $cert"
mkdir -p "$TMP/out"
chmod 777 "$TMP/out"
docker run --rm --network host \
  -v "$TMP:/in:ro" -v "$TMP/out:/out" -v "$cert:/host-ca.crt:ro" -e PIP_CERT=/host-ca.crt \
  -e PIP_INDEX_URL -e PIP_EXTRA_INDEX_URL -e PIP_DISABLE_PIP_VERSION_CHECK=1 \
  -e PIP_DEFAULT_TIMEOUT=60 -e PIP_NO_CACHE_DIR=1 \
  "$BASE_IMAGE" sh -ec '
    python3 - <<EOF
import tomllib
project = tomllib.load(open("/in/pyproject.toml", "rb"))
with open("/out/requirements.txt", "w") as f:
    f.write("# pyproject.toml [project] dependencies (deploy/build-wheels.sh)\n")
    f.write("\n".join(project["project"]["dependencies"]) + "\n")
with open("/tmp/build-requirements.txt", "w") as f:
    f.write("\n".join([*project["build-system"]["requires"], "wheel"]) + "\n")
EOF
    python3 -m venv /tmp/venv
    /tmp/venv/bin/pip wheel --quiet --only-binary=:all: -c /in/constraints.txt \
      --wheel-dir /out -r /out/requirements.txt -r /tmp/build-requirements.txt'
rm -f "$OUT"/*.whl "$OUT/requirements.txt"
mv "$TMP"/out/* "$OUT"/
echo "$key" > "$OUT/.inputs-key"

# Every wheel must install on the image's CPython 3.11 without a compiler.
bad=$(find "$OUT" -name '*.whl' | grep -Ev -- \
      '-(py3|py2\.py3|cp311)-(none|abi3|cp311)-(any|manylinux[^/]*x86_64)\.whl$' || true)
if [ -n "$bad" ]; then
  echo "build-wheels: wheels the image may not install (not pure Python or manylinux cp311):" >&2
  echo "$bad" >&2
  exit 1
fi
log "$(find "$OUT" -name '*.whl' | wc -l) wheels, $(du -ch "$OUT"/*.whl | tail -1 | cut -f1) in $OUT, $(( $(date +%s) - started ))s"
