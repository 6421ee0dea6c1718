#!/usr/bin/env bash
# with-engine.sh CMD [ARG...]: run CMD with a container engine available.
#
# Runs `engine.sh up` first; on the way out (success, failure, Ctrl-C) runs
# `engine.sh down` only if THIS invocation started the engine: a developer's
# Docker, or a dockerd left running by an earlier `make engine`, is left alone.
# Exits with CMD's status.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -gt 0 ] || { echo "usage: $0 CMD [ARG...]" >&2; exit 2; }

# Our dockerd already running before we start (an earlier `make engine`): not ours
# to stop. A stale pid file (dockerd gone) does not count.
before=$(our_pid || true)

# Decided at exit time, so an interrupt during `up` still stops a half-started dockerd.
stop_if_ours() {
    local now
    now=$(our_pid || true)
    if [ -n "$now" ] && [ "$now" != "$before" ]; then
        bash "$ANNA_RUN_ROOT/scripts/engine.sh" down || true
    fi
}
trap stop_if_ours EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash "$ANNA_RUN_ROOT/scripts/engine.sh" up

# CMD runs in the background and we `wait`, because bash runs traps only between
# commands: a foreground CMD would delay our reaction to SIGTERM until it ended.
# Explicit `<&0` keeps stdin (else bash gives background jobs /dev/null; `--pdb`
# needs it) and `trap - INT QUIT` undoes bash's ignoring of them in background jobs,
# so Ctrl-C still reaches CMD.
( trap - INT QUIT; exec "$@" ) <&0 &
child=$!
# Ctrl-C reaches CMD directly (same process group); let it shut down cleanly
# (pytest fixtures remove their containers) instead of exiting under its feet.
trap ':' INT
# A TERM aimed at us alone (CI cancelling the job) is passed on.
trap 'kill -TERM "$child" 2>/dev/null || true' TERM
status=0
while :; do
    wait "$child" && status=0 || status=$?
    kill -0 "$child" 2>/dev/null || break   # `wait` was only interrupted by a signal
done
exit "$status"
