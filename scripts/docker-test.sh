#!/usr/bin/env bash
# make docker-test: docker/Dockerfile and docker/compose.yaml, for real, on a machine that reaches no image registry.
#
# 1. a Docker engine: the running one, else dockerd started here (and stopped at the end);
# 2. stand-ins for the official images from Debian packages: a bookworm root file system (debootstrap, cached as
#    a tarball in ~/.cache/grid-resume) imported as a base image, then Airflow installed on it the way the official
#    image installs it (scripts/docker-standin/), PostgreSQL 15 and Redis 7 (the CeleryExecutor's broker); before
#    that, the agent and the user data in containers of stock Debian 11 and 12 images and of the base image, which
#    has no python3 (scripts/stock-images.sh, tests/system/test_stock_containers.py);
# 3. docker/Dockerfile built on the Airflow stand-in through AIRFLOW_IMAGE, as a user builds it on the official one;
# 4. docker/compose.yaml up (compose v1, as Debian ships it) with the CeleryExecutor, the demo DAG triggered through
#    the REST API and interrupted once, its task run by the Celery worker (scripts/docker_check.py); then everything
#    the stack made is removed (containers, networks, volumes). The images stay, tagged grid-resume-test/*, so that the next run reuses their layers.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
docker=${DOCKER:-/usr/bin/docker} # the engine's own client (a newer one on PATH may lack what this needs)
compose=${COMPOSE:-docker-compose}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/grid-resume
base=grid-resume-test/bookworm-minbase:latest
airflow_standin=grid-resume-test/airflow:3.3.2-python3.11
postgres_standin=grid-resume-test/postgres:15
redis_standin=grid-resume-test/redis:7
image=grid-resume-test/airflow-grid-resume:latest
project=grid-resume-test-$$
work=$(mktemp -d -t grid-resume-docker-test.XXXXXX)
dockerd_pid=""
stack_up=""

say() { printf '%s ▶ %s\n' "$(date +%H:%M:%S)" "$*"; }

cleanup() {
  local rc=$?
  if [[ -n "$stack_up" ]]; then
    if [[ $rc -ne 0 ]]; then
      say "failed: the stack's last log lines"
      "$compose" -p "$project" -f docker/compose.yaml logs --no-color --tail 60 2>&1 | tail -400 || true
    fi
    say "removing the stack (containers, networks, volumes)"
    "$compose" -p "$project" -f docker/compose.yaml down -v --remove-orphans --timeout 20 >/dev/null 2>&1 || true
    left=$("$docker" ps -aq --filter "label=com.docker.compose.project=$project")
    [[ -z "$left" ]] || { echo "containers left behind: $left" >&2; rc=1; }
  fi
  rm -f docker/build-ca/ca.crt
  if [[ -n "$dockerd_pid" ]]; then
    say "stopping the dockerd started here (pid $dockerd_pid)"
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -- 1. the engine -------------------------------------------------------------------------------------------------
if ! "$docker" info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || { echo "no dockerd: make system-deps installs Debian's docker.io" >&2; exit 1; }
  say "starting dockerd (log: $work/dockerd.log)"
  setsid dockerd >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 60); do "$docker" info >/dev/null 2>&1 && break; sleep 0.5; done
  "$docker" info >/dev/null 2>&1 || { tail -20 "$work/dockerd.log" >&2; exit 1; }
fi

# -- 2. stand-ins for the official images ---------------------------------------------------------------------------
if ! "$docker" image inspect "$base" >/dev/null 2>&1; then
  if [[ ! -s "$cache/bookworm-minbase.tar.gz" ]]; then
    say "debootstrap --variant=minbase bookworm (once; cached in $cache)"
    mkdir -p "$cache"
    debootstrap --variant=minbase bookworm "$work/rootfs" >"$work/debootstrap.log" 2>&1 \
      || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    tar -C "$work/rootfs" -c . | gzip -1 >"$cache/bookworm-minbase.tar.gz.part"
    mv "$cache/bookworm-minbase.tar.gz.part" "$cache/bookworm-minbase.tar.gz"
    rm -rf "$work/rootfs"
  fi
  say "importing $base"
  zcat "$cache/bookworm-minbase.tar.gz" | "$docker" import - "$base" >/dev/null
fi

# -- 2b. the agent on stock images: Debian 11 and 12 with python3 and nothing else, and one without python3 ---------
scripts/stock-images.sh
say "the agent and the user data in stock Debian containers (tests/system/test_stock_containers.py)"
GRID_RESUME_STOCK_IMAGES=1 DOCKER=$docker "${PYTHON:-.venv/bin/python}" -m pytest -q -p no:cacheprovider \
  tests/system/test_stock_containers.py

# pip inside the builds verifies PyPI's certificate against the host's CA bundle (TLS-inspecting proxies), handed
# to the throw-away build stages only.
ca=${GRID_RESUME_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}
mkdir -p "$work/standin/build-ca"
cp scripts/docker-standin/* constraints.txt "$work/standin/"
if [[ -s "$ca" ]]; then
  cp "$ca" "$work/standin/build-ca/ca.crt"
  cp "$ca" docker/build-ca/ca.crt
fi
build() { # build TAG LOG ARGS...: quiet unless it fails
  local tag=$1 log=$2
  shift 2
  local started=$SECONDS
  if ! "$docker" build --force-rm -t "$tag" "$@" >"$work/$log" 2>&1; then
    tail -40 "$work/$log" >&2
    return 1
  fi
  say "built $tag ($((SECONDS - started)) s)"
}
build "$postgres_standin" postgres.log -f "$work/standin/postgres.Dockerfile" --build-arg "BASE_IMAGE=$base" \
  "$work/standin"
build "$redis_standin" redis.log -f "$work/standin/redis.Dockerfile" --build-arg "BASE_IMAGE=$base" "$work/standin"
build "$airflow_standin" airflow-standin.log -f "$work/standin/airflow.Dockerfile" --build-arg "BASE_IMAGE=$base" \
  "$work/standin"

# -- 3. the project's image, on the stand-in ------------------------------------------------------------------------
build "$image" image.log -f docker/Dockerfile --build-arg "AIRFLOW_IMAGE=$airflow_standin" .
rm -f docker/build-ca/ca.crt
checks=$("$docker" run --rm "$image" bash -c \
  'echo "uid=$(id -u)"; test -s "$GRID_RESUME_AGENT_ZIPAPP" && echo zipapp; test -e /tmp/build-ca || echo no-ca')
[[ "$checks" == *"uid=50000"* && "$checks" == *zipapp* && "$checks" == *no-ca* ]] \
  || { echo "the image is not as expected: $checks" >&2; exit 1; }

# -- 4. the compose stack -------------------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export GRID_RESUME_IMAGE=$image POSTGRES_IMAGE=$postgres_standin REDIS_IMAGE=$redis_standin \
  AIRFLOW_IMAGE=$airflow_standin
export GRID_RESUME_UI_PORT=$(free_port) GRID_RESUME_CLOUD_PORT=$(free_port)
export GRID_DEMO_STEPS=${GRID_DEMO_STEPS:-200} GRID_DEMO_STEP_SECONDS=${GRID_DEMO_STEP_SECONDS:-0.1}
say "docker-compose up ($("$compose" version --short), project $project)"
stack_up=1
started=$SECONDS
"$compose" -p "$project" -f docker/compose.yaml up -d --no-build >"$work/up.log" 2>&1 \
  || { cat "$work/up.log" >&2; exit 1; }
say "the stack is up ($((SECONDS - started)) s)"
# every published port is on the loopback address
published=$("$docker" ps --filter "label=com.docker.compose.project=$project" --format '{{.Ports}}' | tr ',' '\n')
if grep -E '0\.0\.0\.0|:::' <<<"$published" | grep -q -- '->'; then
  echo "a port is published beyond 127.0.0.1: $published" >&2
  exit 1
fi
DOCKER=$docker "${PYTHON:-.venv/bin/python}" scripts/docker_check.py \
  --api "http://127.0.0.1:$GRID_RESUME_UI_PORT" --cloud "http://127.0.0.1:$GRID_RESUME_CLOUD_PORT" \
  --steps "$GRID_DEMO_STEPS" --compose "$compose -p $project -f docker/compose.yaml"
say "docker-test passed in ${SECONDS} s (images kept for the next run: $image $airflow_standin $postgres_standin" \
  "$redis_standin $base)"
