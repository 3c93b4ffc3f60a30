#!/usr/bin/env bash
# Wheels for the container image, so `docker build` downloads nothing (the air-gapped path;
# see deploy/README.md). Writes deploy/wheels/*.whl: every file requirements/runtime.lock
# pins for the image (the Dockerfile installs that lock with --no-index --require-hashes),
# plus the project's build backend (setuptools, wheel) so the builder stage builds it offline.
#
#   deploy/build-wheels.sh            # downloads again only when its inputs changed
#   deploy/build-wheels.sh --clean    # start from an empty deploy/wheels
#
# Downloaded INSIDE the base image (python:3.11-slim), not by the host's pip: the lock is
# universal (scripts/lock.sh) and its environment markers are evaluated by the installing
# interpreter, here the image's 3.11.2, where `redis` needs `async-timeout;
# python_full_version < "3.11.3"` (the host's 3.11.7 does not); the image's pip also picks
# the wheels matching the image's platform. Binary wheels only (no compiler anywhere), each
# checked against the lock's hashes. The versions are the lock's: change them with
# scripts/lock.sh, not here. That one container reaches the package index through the host's
# network and the host's CA bundle (pip's `cert`); PIP_INDEX_URL / PIP_EXTRA_INDEX_URL are
# passed through when set.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=deploy/wheels
LOCK=requirements/runtime.lock
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
if [ "$CLEAN" = 1 ]; then
  rm -f "$OUT"/*.whl "$OUT/requirements.txt" "$OUT/.inputs-key"
fi
[ -s "$LOCK" ] || { echo "build-wheels: no $LOCK (scripts/lock.sh writes it)" >&2; exit 1; }
docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || {
  echo "build-wheels: no $BASE_IMAGE image (pull it, or deploy/offline-images.sh builds it)" >&2
  exit 1
}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cp "$LOCK" "$TMP/runtime.lock"
cp pyproject.toml "$TMP/pyproject.toml"

# Inputs: the lock, pyproject's build-system table, the base image.
key=$( { cat "$LOCK"; sed -n '/^\[build-system\]/,/^\[project\]/p' pyproject.toml
         docker image inspect -f '{{.Id}}' "$BASE_IMAGE"; } | sha256sum | cut -c1-16)
if [ -s "$OUT/.inputs-key" ] && [ "$(cat "$OUT/.inputs-key")" = "$key" ] \
   && ls "$OUT"/*.whl >/dev/null 2>&1; then
  log "up to date: $(find "$OUT" -name '*.whl' | wc -l) wheels in $OUT (inputs unchanged)"
  exit 0
fi

cert=${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null || true)}
[ -n "$cert" ] && [ -f "$cert" ] || cert=/etc/ssl/certs/ca-certificates.crt
log "downloading $LOCK with $BASE_IMAGE's pip: binary wheels, hash-checked, CA bundle $cert"
mkdir -p "$TMP/out"
chmod 777 "$TMP/out"
cat > "$TMP/download.sh" <<'SCRIPT'
set -e
python3 - <<'PY'
import tomllib
project = tomllib.load(open("/in/pyproject.toml", "rb"))
with open("/tmp/build-requirements.txt", "w") as f:
    f.write("\n".join([*project["build-system"]["requires"], "wheel"]) + "\n")
PY
python3 -m venv /tmp/venv
/tmp/venv/bin/pip download --quiet --only-binary=:all: --require-hashes \
  --dest /out -r /in/runtime.lock
# The build backend is not in the lock: the newest that pyproject's build-system allows.
/tmp/venv/bin/pip download --quiet --only-binary=:all: --dest /out \
  -r /tmp/build-requirements.txt
SCRIPT
docker run --rm --network host \
  -v "$TMP:/in:ro" -v "$TMP/out:/out" -v "$cert:/host-ca.crt:ro" -e PIP_CERT=/host-ca.crt \
  -e PIP_INDEX_URL -e PIP_EXTRA_INDEX_URL -e PIP_DISABLE_PIP_VERSION_CHECK=1 \
  -e PIP_DEFAULT_TIMEOUT=60 -e PIP_NO_CACHE_DIR=1 \
  "$BASE_IMAGE" sh /in/download.sh
rm -f "$OUT"/*.whl "$OUT/requirements.txt"
mv "$TMP"/out/*.whl "$OUT"/
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
