#!/usr/bin/env bash
# `make deploy-test`: the real Dockerfile and docker-compose.yml, run in podman on a machine with no
# Docker engine and no registry access (root, as CI is). Builds a Debian stand-in for the base
# image, the project image and a Prometheus stand-in, brings the stack up with the one override
# (deploy/podman/compose.override.yml) and runs deploy/podman/check_stack.py from the host.
# Each step prints its time; everything is torn down at the end, failed or not.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

# Project-owned podman settings (no ulimits, cgroupfs, runc), never the machine's containers.conf.
export CONTAINERS_CONF=$ROOT/deploy/podman/containers.conf
export PROJECT=gepa-stream-deploy-test
BASE_IMAGE=localhost/gepa-stream-base:bookworm-dev
TOOLS=$ROOT/build/deploy-tools           # podman-compose's own venv (build/ is git-ignored)
SOCKET=/run/gepa-stream-deploy-test.sock # podman's Docker API, for testcontainers

t0=$(date +%s)
step_start=$t0
step() { # print the previous step's time, then the next step's name
  local now; now=$(date +%s)
  [ -n "${STEP:-}" ] && echo "    ${STEP}: $((now - step_start))s"
  STEP=$1; step_start=$now
  echo "==> $STEP"
}

compose() { "$TOOLS/bin/podman-compose" -p "$PROJECT" -f docker-compose.yml -f deploy/podman/compose.override.yml "$@"; }

cleanup() { # always: the stack and its volumes, the API service
  local status=$?
  set +e
  if [ "$status" -ne 0 ] && [ -x "$TOOLS/bin/podman-compose" ]; then
    echo "--- failed: the containers' last log lines ---"
    for c in $(podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}'); do
      echo "--- $c"; podman logs --tail 30 "$c" 2>&1
    done
  fi
  [ -x "$TOOLS/bin/podman-compose" ] && compose down -v >/dev/null 2>&1
  [ -n "${API_PID:-}" ] && kill "$API_PID" 2>/dev/null
  rm -f "$SOCKET"
  echo "deploy-test: $([ "$status" -eq 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - t0 ))s"
  exit "$status"
}
trap cleanup EXIT

step "install podman, runc, debootstrap from Debian (no-op when present)"
need=()
for pkg in podman runc debootstrap fuse-overlayfs slirp4netns uidmap; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

step "podman-compose 1.5.0 in its own venv (Debian's 1.0.3 cannot read docker-compose.yml's env_file)"
if ! "$TOOLS/bin/podman-compose" --version 2>/dev/null | grep -q "podman-compose version 1.5.0"; then
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check podman-compose==1.5.0
fi

step "base image: Debian bookworm + python3.11 (stand-in for python:3.11-slim, cached in podman's store)"
if ! podman image exists "$BASE_IMAGE"; then
  rootfs=$(mktemp -d /var/tmp/gepa-stream-base.XXXXXX)
  # python-is-python3: `python` as in the python image; python3-venv: the Dockerfile's `python -m venv`;
  # python3-dev: the headers the python image ships (the C OTLP reader, handlers/_otlp_wire.c, builds on them)
  debootstrap --variant=minbase --include=python3,python3-venv,python3-dev,python-is-python3,ca-certificates \
    bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
fi

step "project image from the real Dockerfile (layers cached between runs)"
# pip reaches the index through a TLS-intercepting proxy that only the host's CA bundle trusts:
# host network, the bundle at /host-certs and a pip.conf naming it, mounted for the build only.
# --format docker: in the default OCI format podman drops the HEALTHCHECK the daemon services rely on.
podman build --quiet --format docker --network host \
  -v /etc/ssl/certs:/host-certs:ro -v "$ROOT/deploy/podman/pip.conf:/etc/pip.conf:ro" \
  --build-arg PYTHON_IMAGE="$BASE_IMAGE" -t localhost/gepa-stream:latest . >/dev/null

step "Prometheus stand-in image (Debian's prometheus)"
podman build --quiet --format docker --build-arg BASE_IMAGE="$BASE_IMAGE" -f deploy/podman/prometheus.Containerfile \
  -t localhost/gepa-stream-prometheus:latest deploy/podman >/dev/null

step "podman's Docker API for testcontainers"
rm -f "$SOCKET"
podman system service --time=0 "unix://$SOCKET" &
API_PID=$!
for _ in $(seq 50); do [ -S "$SOCKET" ] && break; sleep 0.1; done
export DOCKER_HOST=unix://$SOCKET TESTCONTAINERS_RYUK_DISABLED=true

step "the stack through its containers (deploy/podman/check_stack.py)"
compose down -v >/dev/null 2>&1 || true  # leftovers of an interrupted run
# The broker advertises the host's own address: reachable from the host and from the containers.
export KAFKA_EXTERNAL_HOST=${KAFKA_EXTERNAL_HOST:-$(hostname -I | awk '{print $1}')}
export COMPOSE="$TOOLS/bin/podman-compose -p $PROJECT -f docker-compose.yml -f deploy/podman/compose.override.yml"
PYTHONPATH=$ROOT "$ROOT/.venv/bin/python" deploy/podman/check_stack.py
step "done"
