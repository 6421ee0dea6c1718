#!/usr/bin/env bash
# Build anna-run/python:3.11 without a container registry: debootstrap a minimal
# Debian bookworm (its python3 is 3.11) from the apt mirror, then `docker import`.
# Needs root (debootstrap) and an apt mirror; takes about a minute.
# Always builds: scripts/images.sh decides whether the image is missing.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

TAG="${ANNA_RUN_PYTHON_IMAGE:-anna-run/python:3.11}"
SUITE=bookworm
PACKAGES=python3,python3-pip,python3-venv,ca-certificates

is_root || die "building $TAG offline needs root (debootstrap): run 'sudo scripts/images.sh python',
[provision] or build images/python/Dockerfile on a machine that reaches Docker Hub."

# The Debian mirror apt already uses (deb822 .sources or one-line .list files),
# so a machine behind a local mirror or proxy works; ANNA_RUN_DEBIAN_MIRROR overrides.
debian_mirror() {
    local uris
    if [ -n "${ANNA_RUN_DEBIAN_MIRROR:-}" ]; then echo "$ANNA_RUN_DEBIAN_MIRROR"; return; fi
    uris=$(
        {
            cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
                awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }'
            cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
                awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ } print $i }'
        } | grep -E '^https?://.*/debian/?$' | grep -v -e security -e backports || true
    )
    echo "${uris%%$'\n'*}" | grep . || echo http://deb.debian.org/debian
}

command -v debootstrap >/dev/null || apt_install debootstrap

mirror=$(debian_mirror)
log_dir="$ANNA_RUN_CACHE/images"
mkdir -p "$log_dir"
log="$log_dir/debootstrap-python.log"

# The rootfs lives in a temp dir that is always removed. debootstrap mounts /proc
# and /sys inside it; if it was interrupted those mounts may remain, so unmount
# everything under it first and never let rm cross into another filesystem.
work=$(mktemp -d "${TMPDIR:-/var/tmp}/anna-run-python.XXXXXX")
cleanup() {
    local m
    for m in $(awk -v w="$work" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT
root="$work/rootfs"

t0=$SECONDS
say "image $TAG: debootstrap $SUITE ($PACKAGES) from $mirror (about a minute; log: $log)"
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$mirror" >"$log" 2>&1; then
    tail -n 20 "$log" | sed 's/^/    /' >&2
    die "debootstrap failed; full log: $log"
fi
say "image $TAG: debootstrap done in $((SECONDS - t0))s"

# Make it behave like the official python image:
ln -sf python3 "$root/usr/bin/python"                    # `python` exists
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED        # `pip install` as root works (PEP 668)
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/apt/archives/*.deb                 # smaller; `apt-get update` refetches
# Host-specific files debootstrap copied in; the engine provides its own at run time.
rm -f "$root/etc/hostname" "$root/etc/resolv.conf"

t1=$SECONDS
# /dev, /proc and /sys are provided by the engine at run time: keep them empty.
tar --numeric-owner -C "$root" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . |
    docker import \
        -c 'ENV LANG=C.UTF-8' \
        -c 'ENV PIP_ROOT_USER_ACTION=ignore' \
        -c 'ENV PIP_DISABLE_PIP_VERSION_CHECK=1' \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["python3"]' \
        -c 'LABEL io.anna-run.image=python' \
        -m "anna-run offline build: debootstrap $SUITE minbase + $PACKAGES" \
        - "$TAG" >/dev/null
say "image $TAG: imported in $((SECONDS - t1))s (total $((SECONDS - t0))s)"
