#!/usr/bin/env bash
# Build a small image from Debian's busybox-static package: a root filesystem tar with busybox,
# its applets as symlinks, and the few files a shell expects (/etc/passwd, /tmp, ...).
#
#   scripts/build-busybox-image.sh OUT.tar        then: storagekit image import OUT.tar --name busybox
#
# The .deb is cached in $STORAGEKIT_CACHE (default /var/cache/storagekit) so later builds need
# no network.
set -euo pipefail
out=${1:?usage: $0 OUT.tar}
cache=${STORAGEKIT_CACHE:-/var/cache/storagekit}
mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

deb=$(ls "$cache"/busybox-static_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
    (cd "$cache" && { apt-get download busybox-static >/dev/null 2>&1 ||
                      { apt-get update -qq && apt-get download busybox-static >/dev/null; }; })
    deb=$(ls "$cache"/busybox-static_*.deb | head -n1)
fi
dpkg -x "$deb" "$work/pkg"

root="$work/rootfs"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,home,tmp,var/tmp,proc,sys,dev}
install -m 0755 "$work/pkg/bin/busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list-full); do
    [ "$applet" = bin/busybox ] && continue
    mkdir -p "$root/$(dirname "$applet")"
    ln -sf /bin/busybox "$root/$applet"
done
cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
daemon:x:1:
nogroup:x:65534:
GROUP
echo "busybox" > "$root/etc/hostname"
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0700 "$root/root"
tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@1700000000 \
    -C "$root" -cf "$out.partial" .
mv "$out.partial" "$out"
