"""What the containerd tests do through ctr: import an image onto the storagekit snapshotter,
run a container on it, read containerd's snapshot listing."""

from __future__ import annotations

import subprocess
import time

BUSYBOX = "docker.io/library/busybox:latest"
LAYERED = "docker.io/library/layered:1"
# The layered image's view (tests/conftest.py's layered_image), as a container prints it:
# /app is opaque in layer 2, /etc/doomed whited out, /bin/tool replaced, /etc/motd a symlink.
LAYERED_VIEW_SCRIPT = ("ls -a /app; cat /bin/tool; echo; readlink /etc/motd; "
                       "test -e /etc/doomed && echo doomed-still-there; head -1 /etc/passwd")
LAYERED_VIEW = [".", "..", "new", "v3 replaced", "/etc/issue", "root:x:0:0:root:/root:/bin/sh"]


def import_image(env, archive, *extra: str, **kw) -> subprocess.CompletedProcess:
    """`ctr images import --snapshotter storagekit-<driver> ARCHIVE` (which unpacks it)."""
    return env.ctr("images", "import", "--snapshotter", env.name, *extra, str(archive), **kw)


def run(env, ref: str, cid: str, *argv: str, **kw) -> subprocess.CompletedProcess:
    """`ctr run --rm --snapshotter storagekit-<driver> REF CID ARGV...`."""
    return env.ctr("run", "--rm", "--snapshotter", env.name, ref, cid, *argv, **kw)


def snapshot_rows(env) -> list[tuple[str, str, str]]:
    """containerd's listing of the snapshotter's snapshots: (key, parent, kind)."""
    rows = []
    for line in env.snapshots("ls").stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) == 2:  # no parent
            fields = [fields[0], "", fields[1]]
        rows.append((fields[0], fields[1], fields[2]))
    return rows


def mount_all(mounts: list[dict], target) -> None:
    """Mount what a snapshotter returned (ctr's --mounts JSON) at target with mount(8), which
    runs mount.fuse3 for a fuse3.* type as containerd's own mount code does."""
    for m in mounts:
        options = list(m.get("Options") or [])
        argv = ["mount"]
        if m["Type"] != "bind":
            argv += ["-t", m["Type"]]
        elif "bind" not in options and "rbind" not in options:
            options.append("bind")
        if options:
            argv += ["-o", ",".join(options)]
        proc = subprocess.run([*argv, m["Source"], str(target)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{argv} {m['Source']} {target}: {proc.stderr}"


def umount(target) -> None:
    subprocess.run(["umount", str(target)], check=True, capture_output=True)


def once_reachable(call, timeout: float = 15) -> subprocess.CompletedProcess:
    """call() (a ctr command, with check=False) until containerd has reached the snapshotter
    again. containerd redials a proxy plugin with a backoff of up to 3 s and fails the calls
    made in between as Unavailable; after that, call()'s result stands."""
    deadline = time.monotonic() + timeout
    while True:
        proc = call()
        if proc.returncode == 0 or "unavailable" not in proc.stderr or \
                time.monotonic() > deadline:
            return proc
        time.sleep(0.5)
