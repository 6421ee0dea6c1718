#!/usr/bin/env bash
# Make sure a container engine answers, without ever touching one we did not start.
#
#   scripts/engine.sh up      use the running engine, else (root only) start a private dockerd
#   scripts/engine.sh down    stop the dockerd that `up` started (named by our pid file), nothing else
#   scripts/engine.sh status  say which engine answers and whether it is ours
#
# A developer laptop already runs Docker: `up` sees `docker info` answer and does nothing.
# A fresh CI machine has only the client: `up` installs Debian's docker.io and starts
# dockerd detached (own session, stdio on a log file) so it can never hold CI's output
# open, and writes its PID to .cache/engine/dockerd.pid (or $ANNA_RUN_CACHE/engine/).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

START_TIMEOUT=60   # seconds for a fresh dockerd to answer
STOP_TIMEOUT=20    # seconds between SIGTERM and SIGKILL

# Start time of a process (field 22 of /proc/PID/stat): with the PID it identifies
# the process for sure, so a recycled PID is never mistaken for ours.
proc_start() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }            # drop "pid (comm) ", comm may hold spaces
    # shellcheck disable=SC2086
    set -- $stat
    echo "${20}"
}

# All descendants of PID as "pid:starttime" (read from /proc: procps may be absent).
descendants() {
    local parent=$1 p ppid kids=() queue=("$1")
    while [ ${#queue[@]} -gt 0 ]; do
        parent=${queue[0]}; queue=("${queue[@]:1}")
        for p in /proc/[0-9]*; do
            p=${p#/proc/}
            ppid=$(awk '/^PPid:/{print $2}' "/proc/$p/status" 2>/dev/null) || continue
            if [ "$ppid" = "$parent" ]; then
                kids+=("$p:$(proc_start "$p" || echo 0)")
                queue+=("$p")
            fi
        done
    done
    [ ${#kids[@]} -eq 0 ] || printf '%s\n' "${kids[@]}"
}

alive() { [ -d "/proc/$1" ] && [ "$(proc_start "$1" 2>/dev/null)" = "$2" ]; }

# Send SIG to pid (identified by start time), wait up to T seconds, then SIGKILL.
stop_process() {
    local pid=$1 start=$2 timeout=$3 name=$4 i
    alive "$pid" "$start" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        alive "$pid" "$start" || return 0
        sleep 0.1
    done
    say "engine: $name (pid $pid) ignored SIGTERM for ${timeout}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive "$pid" "$start" || return 0
        sleep 0.1
    done
    say "engine: warning: $name (pid $pid) still alive after SIGKILL"
}

cmd_up() {
    local pid
    if engine_answers; then
        if pid=$(our_pid); then
            say "engine: ours is running (dockerd pid $pid)"
        else
            say "engine: using the running one"
        fi
        return 0
    fi

    # Our dockerd may be alive but still starting (or wedged): never start a second one.
    if pid=$(our_pid); then
        say "engine: our dockerd (pid $pid) does not answer yet; waiting"
        wait_ready "$pid"
        return
    fi
    rm -f "$ENGINE_PID_FILE"   # stale: names a process that is gone

    if [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST}" != unix:///var/run/docker.sock ]; then
        die "DOCKER_HOST=$DOCKER_HOST does not answer; not starting a local engine in its place"
    fi
    if ! is_root; then
        die "no container engine answers ('docker info' failed) and I am not root, so I won't start one.
[provision] Start Docker yourself (e.g. 'sudo systemctl start docker', Docker Desktop, or
[provision] 'sudo scripts/engine.sh up' for a private dockerd), or point DOCKER_HOST at an engine."
    fi
    # docker.io brings dockerd, containerd, runc, iptables (and its own /usr/bin/docker client).
    local pkgs=()
    command -v dockerd >/dev/null || pkgs+=(docker.io)
    apparmor_parser_needed && pkgs+=(apparmor)
    [ ${#pkgs[@]} -eq 0 ] || apt_install "${pkgs[@]}"
    command -v dockerd >/dev/null || die "dockerd still missing after installing docker.io"

    mkdir -p "$ENGINE_DIR"
    say "engine: starting dockerd (log: $ENGINE_LOG_FILE)"
    {
        echo "=== $(date -u +%FT%TZ) dockerd started by anna-run scripts/engine.sh"
    } >>"$ENGINE_LOG_FILE"
    # Detach completely: new session (no terminal signals), stdin from /dev/null,
    # stdout/stderr to the log, and every other inherited fd closed (make or a CI
    # runner may hand us pipes; a daemon holding one open keeps CI waiting forever).
    # Without job control this background subshell is not a process group leader,
    # so setsid does not fork and $! is dockerd's own PID.
    set +m
    (
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        # shellcheck disable=SC2086
        exec setsid dockerd ${ANNA_RUN_DOCKERD_ARGS:-} </dev/null >>"$ENGINE_LOG_FILE" 2>&1
    ) &
    pid=$!
    echo "$pid" >"$ENGINE_PID_FILE"
    wait_ready "$pid"
}

# Wait for the engine to answer; on failure show the log and stop what we started.
wait_ready() {
    local pid=$1 t0=$SECONDS
    while ((SECONDS - t0 < START_TIMEOUT)); do
        if engine_answers; then
            say "engine: dockerd (pid $pid) answers after $((SECONDS - t0))s"
            return 0
        fi
        if [ ! -d "/proc/$pid" ]; then
            say "engine: dockerd exited during start-up; last lines of $ENGINE_LOG_FILE:"
            tail -n 30 "$ENGINE_LOG_FILE" | sed 's/^/    /' >&2
            rm -f "$ENGINE_PID_FILE"
            exit 1
        fi
        sleep 1
    done
    say "engine: dockerd did not answer within ${START_TIMEOUT}s; last lines of $ENGINE_LOG_FILE:"
    tail -n 30 "$ENGINE_LOG_FILE" | sed 's/^/    /' >&2
    cmd_down
    exit 1
}

cmd_down() {
    local pid start kids kid
    if ! pid=$(our_pid); then
        if [ -f "$ENGINE_PID_FILE" ]; then
            say "engine: pid file names no running dockerd; removing it"
            rm -f "$ENGINE_PID_FILE"
        fi
        return 0   # nothing of ours: leave any other engine alone
    fi
    start=$(proc_start "$pid")
    # dockerd starts containerd as its child (in a session of its own, so not in our
    # process group). dockerd stops it on SIGTERM, but not if it has to be SIGKILLed:
    # remember the children now, while they are still children.
    kids=$(descendants "$pid")
    say "engine: stopping our dockerd (pid $pid)"
    stop_process "$pid" "$start" "$STOP_TIMEOUT" dockerd
    for kid in $kids; do
        stop_process "${kid%%:*}" "${kid#*:}" 5 "dockerd's child"
    done
    rm -f "$ENGINE_PID_FILE"
    say "engine: stopped"
}

cmd_status() {
    local pid
    if engine_answers; then
        if pid=$(our_pid); then
            say "engine: running, started by us (dockerd pid $pid, log $ENGINE_LOG_FILE)"
        else
            say "engine: running, not started by us (left alone by 'down')"
        fi
        docker version --format '[provision] engine: server {{.Server.Version}}, client {{.Client.Version}}' >&2 || true
        return 0
    fi
    if pid=$(our_pid); then
        say "engine: our dockerd (pid $pid) is alive but does not answer; see $ENGINE_LOG_FILE"
    else
        say "engine: none answers"
    fi
    return 1
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
