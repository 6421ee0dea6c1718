#!/usr/bin/env bash
# scripts/deps.sh [venv] [redis]: the Debian packages `make` needs besides the engine and the
# images (scripts/engine.sh and images/ provision those), installed only when missing and
# only as root; otherwise a clear message of what to install.
#   venv   python3-venv: Debian's python3 makes no venv (no ensurepip) without it
#   redis  redis-server: the broker the runner-host tests and the bench's queue row start
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need=()
for what in "$@"; do
    case "$what" in
        venv) python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv) ;;
        redis) command -v redis-server >/dev/null || need+=(redis-server) ;;
        *) die "unknown dependency '$what' (venv, redis)" ;;
    esac
done
[ ${#need[@]} -eq 0 ] && exit 0
if is_root && command -v apt-get >/dev/null; then
    apt_install "${need[@]}"
else
    die "missing: ${need[*]} — install them (Debian: sudo apt-get install ${need[*]}) or run as root"
fi
