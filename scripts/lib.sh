# shellcheck shell=bash
# Shared helpers for the provisioning scripts. Sourced, never run.

# Repo root = parent of scripts/; every path below is derived from it so the
# scripts work from any current directory (make, CI, a developer's shell).
ANNA_RUN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Generated state (dockerd log/pid, ...) lives in .cache/ unless told otherwise.
ANNA_RUN_CACHE="${ANNA_RUN_CACHE:-$ANNA_RUN_ROOT/.cache}"

say() { echo "[provision] $*" >&2; }
die() { echo "[provision] error: $*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# `timeout SECS CMD...` where coreutils has it (macOS has no `timeout`).
with_timeout() {
    if command -v timeout >/dev/null; then timeout "$@"; else shift; "$@"; fi
}

# Does a container engine answer? A timeout, because a stale DOCKER_HOST or a
# wedged daemon can make `docker info` hang instead of failing.
engine_answers() { with_timeout 15 docker info >/dev/null 2>&1; }

# apt-get install, running `apt-get update` at most once per provisioning run.
# The flag is exported so child scripts (make -> with-engine -> images.sh)
# don't update again; a fresh machine has empty lists, so the first install
# must update.
apt_install() {
    is_root || die "need root to install: $* (install them yourself, or run as root)"
    command -v apt-get >/dev/null || die "no apt-get here; install by hand: $*"
    if [ "${ANNA_RUN_APT_UPDATED:-}" != 1 ]; then
        say "apt-get update"
        apt-get update -qq </dev/null
        export ANNA_RUN_APT_UPDATED=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null
}

# Where scripts/engine.sh keeps the private dockerd it may start.
ENGINE_DIR="$ANNA_RUN_CACHE/engine"
ENGINE_PID_FILE="$ENGINE_DIR/dockerd.pid"
ENGINE_LOG_FILE="$ENGINE_DIR/dockerd.log"

# PID of the dockerd our pid file names, if that process is alive and is a dockerd.
our_pid() {
    local pid
    [ -f "$ENGINE_PID_FILE" ] || return 1
    pid=$(tr -dc '0-9' <"$ENGINE_PID_FILE")
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] || return 1
    echo "$pid"
}

# Debian kernels enable AppArmor. dockerd then confines every container with its
# docker-default profile, which it loads with apparmor_parser; without that tool
# (package `apparmor`, only a Recommends of docker.io) every container start fails.
apparmor_parser_needed() {
    local enabled
    enabled=$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null) || return 1
    [ "${enabled:0:1}" = Y ] && ! command -v apparmor_parser >/dev/null && [ ! -x /sbin/apparmor_parser ]
}

# Debian's busybox-static (not the dynamic `busybox` package) at /bin/busybox?
is_static_binary() {
    local out
    [ -x "$1" ] || return 1
    out=$(LC_ALL=C ldd "$1" 2>&1) || true   # ldd exits 1 for a static binary
    case "$out" in *"not a dynamic executable"* | *"statically linked"*) return 0 ;; esac
    return 1
}
