#!/usr/bin/env bash
# CI: the deployment's containers for real, on a machine with no image registry.
#
#   .ci/containers.sh          # everything below, in order (what .ci/run calls)
#   .ci/containers.sh engine   # only steps 1-3: Docker engine + base images. Run it before the
#                              # test suite and the suite's Redis fixture takes testcontainers.
#
#   1. install Debian's docker.io, docker-compose (1.29) and debootstrap when missing
#   2. start dockerd when no engine answers (log: /var/log/callbridge-dockerd.log)
#   3. base images from Debian packages (deploy/offline-images.sh; skips present ones)
#   4. the project's wheels on the host (deploy/build-wheels.sh), `docker build` (offline)
#   5. `docker-compose --compatibility up -d`: Redis (AOF, password), HAProxy, ingress x2,
#      orchestrator x2, gateway x2; wait for every health check; `docker-compose ps`
#   6. tests/stack/test_containers_lb.py against the containers (simulators on the host)
#   7. `docker-compose down -v`, also on failure or Ctrl-C
#
# Every wait is bounded; each section prints its duration and the running total.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-all}
case "$MODE" in all|engine) ;; *) echo "usage: $0 [all|engine]" >&2; exit 2 ;; esac

T0=$(date +%s)
SECTION_T=$T0
section() {
  local now; now=$(date +%s)
  [ "$SECTION_T" != "$T0" ] && echo "   (took $(( now - SECTION_T ))s)"
  SECTION_T=$now
  echo
  echo "== containers: $* [t+$(( now - T0 ))s]"
}
die() { echo "containers: $*" >&2; exit 1; }

# --- 1. packages ----------------------------------------------------------------------
section "packages (docker.io, docker-compose, debootstrap)"
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "need root to install ${missing[*]}"
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "$(docker --version); $(docker-compose --version); debootstrap $(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null || echo '?')"

# --- 2. engine ------------------------------------------------------------------------
section "docker engine"
if ! docker info >/dev/null 2>&1; then
  echo "no engine answers: starting dockerd (log /var/log/callbridge-dockerd.log)"
  nohup dockerd > /var/log/callbridge-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { tail -n 30 /var/log/callbridge-dockerd.log >&2; die "dockerd did not answer within 60s"; }
fi
docker info --format 'engine {{.ServerVersion}}, storage {{.Driver}}, cgroup {{.CgroupDriver}} v{{.CgroupVersion}}'

# --- 3. base images -------------------------------------------------------------------
section "base images from Debian packages (deploy/offline-images.sh)"
bash deploy/offline-images.sh

if [ "$MODE" = engine ]; then
  section "engine ready"
  exit 0
fi

# --- 4. application image -------------------------------------------------------------
[ -x .venv/bin/python ] || bash scripts/bootstrap.sh   # .ci/run has done it already
section "wheels on the host (deploy/build-wheels.sh)"
bash deploy/build-wheels.sh
section "docker build -t callbridge:latest (offline: base images local, wheels local)"
docker build --quiet --force-rm -t callbridge:latest . >/dev/null
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' callbridge:latest

# --- 5. compose up --------------------------------------------------------------------
# compose.yaml's own variables, set for this run; exported so the test's docker-compose
# calls (it rolls the orchestrators once the simulated account has its media config) see
# exactly the same configuration.
free_port() {  # $1 host, $2 preferred port: that one when free, else any free one
  python3 - "$1" "$2" <<'EOF'
import socket, sys
host, preferred = sys.argv[1], int(sys.argv[2])
for port in (preferred, 0):
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            continue
        print(s.getsockname()[1])
        break
EOF
}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-callbridge-ci}
export COMPOSE_FILE=compose.yaml:deploy/compose.ci.yaml
# The simulators run on the host, reached from containers as host.docker.internal (compose's
# `host-gateway`): ask a container what that resolves to, and bind the simulators there
# rather than on every interface.
CALLBRIDGE_SIM_HOST=$(docker run --rm --network none --add-host host.docker.internal:host-gateway \
  --entrypoint getent python:3.11-slim hosts host.docker.internal | awk '{print $1; exit}')
[ -n "$CALLBRIDGE_SIM_HOST" ] || die "could not resolve host-gateway (Docker >= 20.10 needed)"
export CALLBRIDGE_SIM_HOST
export LB_ADDRESS=127.0.0.1
LB_PORT=$(free_port 127.0.0.1 8000); export LB_PORT
LB_STATS_PORT=$(free_port 127.0.0.1 8404); export LB_STATS_PORT
CALLBRIDGE_SIM_INFOBIP_PORT=$(free_port "$CALLBRIDGE_SIM_HOST" 8070); export CALLBRIDGE_SIM_INFOBIP_PORT
CALLBRIDGE_SIM_OPENAI_PORT=$(free_port "$CALLBRIDGE_SIM_HOST" 8060); export CALLBRIDGE_SIM_OPENAI_PORT
export INFOBIP_BASE_URL="http://host.docker.internal:${CALLBRIDGE_SIM_INFOBIP_PORT}"
export OPENAI_REALTIME_URL="ws://host.docker.internal:${CALLBRIDGE_SIM_OPENAI_PORT}/v1/realtime"
export INFOBIP_API_KEY=sim-infobip-key OPENAI_API_KEY=sk-sim-openai
export INFOBIP_MEDIA_STREAM_CONFIG_ID=""   # the test creates it at the simulated account
export REDIS_APPENDFSYNC=always            # the durability checks assert zero loss
# compose.yaml requires both secrets; fresh ones each run (hex: URL-safe in REDIS_URL).
REDIS_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(24))'); export REDIS_PASSWORD
export WEBHOOK_BASIC_USER=infobip
WEBHOOK_BASIC_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(24))'); export WEBHOOK_BASIC_PASSWORD
export GATEWAY_DRAIN_TIMEOUT_S=120                 # bounded in CI; compose's default is 600
export CALLBRIDGE_COMPOSE="docker-compose --compatibility"
COMPOSE=(docker-compose --compatibility)

teardown() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$rc" != 0 ]; then
    echo
    echo "== containers: FAILED (exit $rc): state and last log lines"
    "${COMPOSE[@]}" ps || true
    "${COMPOSE[@]}" logs --no-color --tail=40 2>&1 | tail -n 300 || true
  fi
  section "teardown (docker-compose down -v)"
  timeout 180 "${COMPOSE[@]}" down -v --remove-orphans --timeout 30 || true
  echo "== containers: total $(( $(date +%s) - T0 ))s, exit $rc"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

section "docker-compose --compatibility up -d (project $COMPOSE_PROJECT_NAME, LB 127.0.0.1:$LB_PORT)"
echo "simulators on the host at $CALLBRIDGE_SIM_HOST (infobip :$CALLBRIDGE_SIM_INFOBIP_PORT, openai :$CALLBRIDGE_SIM_OPENAI_PORT)"
"${COMPOSE[@]}" down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true  # a previous run's leftovers
"${COMPOSE[@]}" up -d --no-build

section "waiting for every health check (bounded: 180s)"
expected=8   # redis, lb, ingress x2, orchestrator x2, gateway x2
deadline=$(( $(date +%s) + 180 ))
while :; do
  ids=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
  healthy=0; total=0; states=""
  for id in $ids; do
    total=$(( total + 1 ))
    state=$(docker inspect -f '{{.Name}}={{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id")
    states="$states ${state#/}"
    case "$state" in *=running/healthy) healthy=$(( healthy + 1 )) ;; esac
  done
  if [ "$total" -ge "$expected" ] && [ "$healthy" = "$total" ]; then
    echo "all $total containers healthy after $(( $(date +%s) - SECTION_T ))s"
    break
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "not healthy:$states" >&2
    die "the topology did not become healthy within 180s"
  fi
  sleep 2
done
"${COMPOSE[@]}" ps

# --- 6. the through-the-load-balancer test --------------------------------------------
section "tests/stack/test_containers_lb.py through HAProxy at 127.0.0.1:$LB_PORT"
CALLBRIDGE_CONTAINERS=1 .venv/bin/python -m pytest -p no:cacheprovider -q -s -rA \
  tests/stack/test_containers_lb.py
