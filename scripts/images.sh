#!/usr/bin/env bash
# scripts/images.sh [busybox] [python]: build the local images tests and examples
# use, only those missing (ANNA_RUN_REBUILD=1 rebuilds). Needs an engine that
# answers (scripts/engine.sh up).
#
#   anna-run/busybox:latest  FROM scratch + Debian's busybox-static (~1 s, offline)
#   anna-run/python:3.11     images/python/Dockerfile when a registry answers,
#                            else debootstrap + docker import (~1 min, root)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PYTHON_TAG="${ANNA_RUN_PYTHON_IMAGE:-anna-run/python:3.11}"
export ANNA_RUN_PYTHON_IMAGE="$PYTHON_TAG"

engine_answers || die "no container engine answers; run 'scripts/engine.sh up' (or 'make engine') first"

build_python() {
    local t0=$SECONDS
    if [ "${ANNA_RUN_REBUILD:-0}" != 1 ] && docker image inspect "$PYTHON_TAG" >/dev/null 2>&1; then
        say "image $PYTHON_TAG: present, skipping"
        return 0
    fi
    # Only pull-and-build when the registry really answers: an offline machine
    # fails fast (DNS) or hangs (firewall), hence the timeout.
    say "image $PYTHON_TAG: checking whether Docker Hub answers (docker pull python:3.11-slim)"
    if with_timeout 20 docker pull -q python:3.11-slim >/dev/null 2>&1; then
        say "image $PYTHON_TAG: building images/python/Dockerfile"
        docker build -q -t "$PYTHON_TAG" "$ANNA_RUN_ROOT/images/python" >/dev/null
    else
        say "image $PYTHON_TAG: no registry; building offline with debootstrap"
        bash "$ANNA_RUN_ROOT/images/python/build-offline.sh"
    fi
    say "image $PYTHON_TAG: built in $((SECONDS - t0))s"
}

build_busybox() {
    bash "$ANNA_RUN_ROOT/images/busybox/build.sh"   # prints its own timing
}

[ $# -gt 0 ] || set -- busybox python
for image in "$@"; do
    case "$image" in
        busybox) build_busybox ;;
        python) build_python ;;
        *) die "unknown image '$image' (busybox, python)" ;;
    esac
done
