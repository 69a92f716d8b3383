"""What the containerd tests do through ctr: import an image onto the storagekit snapshotter,
run a container on it, read containerd's snapshot listing."""

from __future__ import annotations

import subprocess

from containerd_util import tail

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
    """`ctr run --rm --snapshotter storagekit-<driver> REF CID ARGV...`, of a command that
    prints something: a run that printed nothing says what ctr and containerd said."""
    proc = env.ctr("run", "--rm", "--snapshotter", env.name, ref, cid, *argv, **kw)
    if not proc.stdout:
        raise AssertionError(f"ctr run {cid} printed nothing (exit {proc.returncode}): "
                             f"{proc.stderr}\n--- containerd log:\n{tail(env.containerd.log, 60)}")
    return proc


def snapshot_rows(env) -> list[tuple[str, str, str]]:
    """containerd's listing of the snapshotter's snapshots: (key, parent, kind)."""
    rows = []
    for line in env.snapshots("ls").stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) == 2:  # no parent
            fields = [fields[0], "", fields[1]]
        rows.append((fields[0], fields[1], fields[2]))
    return rows


# containerd's core/mount/mount_linux.go: a mount of type fuse.NAME or fuse3.NAME is made by
# running the helper mount.fuse or mount.fuse3 as `HELPER SOURCE TARGET -o OPT... -t NAME`.
FUSE_HELPERS = {"fuse.": "mount.fuse", "fuse3.": "mount.fuse3"}


def mount_all(mounts: list[dict], target) -> None:
    """Mount what a snapshotter returned (ctr's --mounts JSON) at target the way containerd's
    own mount code does: a fuse helper as above, anything else with mount(8)."""
    for m in mounts:
        options = list(m.get("Options") or [])
        prefix = next((p for p in FUSE_HELPERS if m["Type"].startswith(p)), None)
        if prefix is not None:
            argv = [FUSE_HELPERS[prefix], m["Source"], str(target)]
            for o in options:
                argv += ["-o", o]
            argv += ["-t", m["Type"].removeprefix(prefix)]
        else:
            argv = ["mount"]
            if m["Type"] != "bind":
                argv += ["-t", m["Type"]]
            elif "bind" not in options and "rbind" not in options:
                options.append("bind")
            if options:
                argv += ["-o", ",".join(options)]
            argv += [m["Source"], str(target)]
        proc = subprocess.run(argv, capture_output=True, text=True)
        assert proc.returncode == 0, f"{argv}: {proc.stderr}"


def umount(target) -> None:
    subprocess.run(["umount", str(target)], check=True, capture_output=True)

