#!/usr/bin/env bash
# Build anna-run/busybox:latest FROM scratch with Debian's busybox-static.
# Skipped when the image exists (ANNA_RUN_REBUILD=1 forces a rebuild).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

TAG="${ANNA_RUN_BUSYBOX_IMAGE:-anna-run/busybox:latest}"
HERE="$ANNA_RUN_ROOT/images/busybox"

if [ "${ANNA_RUN_REBUILD:-0}" != 1 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
    say "image $TAG: present, skipping"
    exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/anna-run-busybox.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The image has no libc, so only a statically linked busybox works in it
# (Debian's plain `busybox` package is dynamic; `busybox-static` is not).
bb=""
for candidate in /bin/busybox /usr/bin/busybox; do
    if is_static_binary "$candidate"; then bb=$candidate; break; fi
done
if [ -z "$bb" ] && command -v apt-get >/dev/null; then
    if is_root; then
        apt_install busybox-static
        bb=/bin/busybox
    elif (cd "$tmp" && apt-get download busybox-static >/dev/null 2>&1); then
        # Not root: unpack the package into our temp dir instead of installing it.
        say "busybox-static not installed; using the unpacked package"
        dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/pkg"
        bb="$tmp/pkg/bin/busybox"
    fi
fi

t0=$SECONDS
if [ -z "$bb" ] || ! is_static_binary "$bb"; then
    # No Debian here (e.g. macOS with Docker Desktop): the official image, if a
    # registry answers, labelled the same way.
    if with_timeout 30 docker pull -q busybox:1.36 >/dev/null 2>&1; then
        say "image $TAG: no busybox-static here; building FROM busybox:1.36"
        printf 'FROM busybox:1.36\nLABEL io.anna-run.image=busybox\n' |
            docker build -q -t "$TAG" - >/dev/null 2>&1 || die "docker build of $TAG failed"
        say "image $TAG: built in $((SECONDS - t0))s"
        exit 0
    fi
    die "need Debian's busybox-static (apt-get install busybox-static) or a registry with busybox:1.36"
fi

say "image $TAG: building from $bb"
ctx="$tmp/context"
root="$ctx/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/root" "$root/tmp" "$root/usr"
cp "$HERE/Dockerfile" "$ctx/Dockerfile"
cp "$bb" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
# One symlink per applet, so `sh`, `sleep`, `cat`, `env`, `dd`, `base64`... exist as files.
for applet in $("$bb" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
# Merged-/usr layout as in Debian: /usr/bin/env and /sbin/... resolve too.
ln -s bin "$root/sbin"
ln -s ../bin "$root/usr/bin"
ln -s ../bin "$root/usr/sbin"
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

# Output kept for failures only: a client without buildx prints a deprecation
# notice about the legacy builder on every build, which is harmless here.
if ! out=$(docker build -q -t "$TAG" "$ctx" 2>&1); then
    echo "$out" >&2
    die "docker build of $TAG failed"
fi
say "image $TAG: built in $((SECONDS - t0))s"
