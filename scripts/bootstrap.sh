#!/usr/bin/env bash
# Set up this machine for storagekit: Debian packages, Python packages, the native build.
# Idempotent and quick when everything is already there. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
    build-essential pkg-config            # the C++ extension
    libarchive-dev libmount-dev libssl-dev libzstd-dev libacl1-dev libudev-dev
    attr acl zstd util-linux              # tests compare against the kernel's own tools
    busybox-static                        # the namespace tests boot it (/bin/busybox)
    xfsprogs btrfs-progs e2fsprogs        # reflink and real filesystems on loop devices
    containerd runc                       # the image export is checked by containerd itself
    fuse3 libfuse3-dev                    # mount.fuse3, /dev/fuse; libfuse for the thin engine
    fuse-overlayfs unionfs-fuse fio       # peers and load the benchmarks compare against
    thin-provisioning-tools               # thin_check/thin_dump judge the thin engine's metadata
    docker.io                             # dockerd 20.10 on the graphdriver plugin (tests/docker)
    golang-go golang-github-containerd-containerd-dev  # containerd's snapshotter test suite
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "bootstrap: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Packages with daemons (docker.io, containerd) must not start them: the tests start and
    # stop their own. A policy-rc.d that refuses every start, while this script runs.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
# An editable install leaves the sources uncompiled, and with PYTHONDONTWRITEBYTECODE set they
# would be compiled again on every CLI call (~10 ms): compile them once, as pip does for a
# regular install.
python3 -m compileall -q storagekit drivers >/dev/null

# mount(8) runs FUSE helpers (mount -t fuse.storagekit-union, for the aufs driver's mounts as
# data) from a fixed PATH: make the union engine's helper available there, under its name
# and the name it had before (storagekit-unionfs).
scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
for helper in storagekit-union storagekit-unionfs; do
    ln -sf "$scripts/$helper" "/usr/local/bin/$helper"
done
