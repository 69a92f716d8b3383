"""storagekit._native mount area: the mount table, path queries, mount/umount/bind, unmounting
whole trees and overlay mounts through the new mount API.

Real mounts (tmpfs, bind, overlay, FUSE) in tmp_path, as root. Results are checked against the
kernel: /proc/self/mountinfo and /proc/self/mounts parsed here, st_dev, statvfs flags, errno.
Every test that mounts uses the `scratch` fixture, which unmounts whatever is left under its
directory with util-linux's umount, so a failing test leaves nothing mounted.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from storagekit import _native as n

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


# ------------------------------------------------------------------------------ kernel's view


def _unescape(field: bytes) -> str:
    """Undo mountinfo's octal escapes (space is \\040, newline \\012, backslash \\134)."""
    raw = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field)
    return os.fsdecode(raw)


def mountinfo() -> list[dict]:
    """/proc/self/mountinfo, parsed here independently of libmount."""
    out = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.rstrip(b"\n").split(b" ")
            sep = fields.index(b"-", 6)
            major, minor = (int(x) for x in fields[2].split(b":"))
            out.append(
                {
                    "id": int(fields[0]),
                    "parent_id": int(fields[1]),
                    "major": major,
                    "minor": minor,
                    "root": _unescape(fields[3]),
                    "target": _unescape(fields[4]),
                    "vfs_options": fields[5].decode(),
                    "fstype": _unescape(fields[sep + 1]),
                    "source": _unescape(fields[sep + 2]),
                    "fs_options": _unescape(fields[sep + 3]),
                }
            )
    return out


def proc_mounts_options() -> list[str]:
    with open("/proc/self/mounts", "rb") as f:
        return [_unescape(line.split(b" ")[3]) for line in f]


def under(base: Path | str, target: str) -> bool:
    base = str(base)
    return target == base or target.startswith(base.rstrip("/") + "/")


def targets_under(base: Path) -> list[str]:
    return [m["target"] for m in mountinfo() if under(base, m["target"])]


def dev_of(path: Path | str) -> tuple[int, int]:
    st = os.stat(path)
    return os.major(st.st_dev), os.minor(st.st_dev)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, with everything mounted under it removed afterwards (lazily, by util-linux,
    several rounds for stacked and covered mounts)."""
    yield tmp_path
    for _ in range(10):
        left = targets_under(tmp_path)
        if not left:
            break
        for target in reversed(left):
            subprocess.run(["umount", "-l", os.fsencode(target)], capture_output=True)
    assert targets_under(tmp_path) == []


def tmpfs(path: Path, flags: int = 0, data: str = "size=4m") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    n.mount("tmpfs", str(path), "tmpfs", flags, data)
    return path


# ---------------------------------------------------------------------------- the mount table


def test_constants():
    assert (n.MS_RDONLY, n.MS_NOSUID, n.MS_NODEV, n.MS_NOEXEC) == (1, 2, 4, 8)
    assert (n.MS_REMOUNT, n.MS_BIND, n.MS_REC) == (32, 4096, 16384)
    assert (n.MS_PRIVATE, n.MS_SLAVE, n.MS_SHARED) == (1 << 18, 1 << 19, 1 << 20)
    assert (n.MNT_FORCE, n.MNT_DETACH) == (1, 2)


# A mount point whose name mountinfo must escape, plus non-ASCII and an undecodable byte.
ODD_NAME = "sp ace\ttab\nnl\\bs-é-" + os.fsdecode(b"\xff")


def test_mount_table_matches_mountinfo(scratch: Path):
    odd = tmpfs(scratch / ODD_NAME, n.MS_NOSUID | n.MS_NODEV, "size=1m,mode=0711")
    (odd / "sub").mkdir()
    bound = scratch / "bound"
    bound.mkdir()
    n.bind(str(odd / "sub"), str(bound))

    # Other processes may mount meanwhile (the namespace is shared): compare a snapshot that
    # the kernel's own listings bracket unchanged.
    for _ in range(20):
        kernel = mountinfo()
        table = n.mount_table()
        options = proc_mounts_options()
        if mountinfo() == kernel:
            break
    assert len(table) == len(kernel)
    for ours, theirs in zip(table, kernel, strict=True):
        for key, value in theirs.items():
            assert ours[key] == value, (key, theirs["target"])
    # "options" is what /proc/mounts shows: vfs options, then the superblock's own.
    assert [m["options"] for m in table] == options

    entry = next(m for m in table if m["target"] == str(odd))
    assert entry["fstype"] == "tmpfs" and entry["source"] == "tmpfs"
    assert (entry["major"], entry["minor"]) == dev_of(odd)
    assert "nosuid" in entry["vfs_options"].split(",")
    assert "mode=711" in entry["fs_options"].split(",")
    bind_entry = next(m for m in table if m["target"] == str(bound))
    assert bind_entry["root"] == "/sub"
    assert (bind_entry["major"], bind_entry["minor"]) == dev_of(odd)

    n.umount(str(bound))
    n.umount(str(odd))
    assert targets_under(scratch) == []


# ------------------------------------------------------------------------------- path queries


def test_find_mount_nested(scratch: Path, monkeypatch: pytest.MonkeyPatch):
    a = tmpfs(scratch / "a")
    b = tmpfs(a / "b")
    (b / "c").mkdir()
    (b / "c" / "f").write_text("x")
    (a / "x").mkdir()
    (scratch / "link").symlink_to(b / "c")

    assert n.find_mount(str(b / "c" / "f"))["target"] == str(b)
    assert n.find_mount(str(b))["target"] == str(b)
    assert n.find_mount(str(a / "x"))["target"] == str(a)
    assert n.find_mount(str(scratch / "link"))["target"] == str(b)  # real path
    monkeypatch.chdir(a)
    assert n.find_mount("b/c/../c")["target"] == str(b)

    outer = n.find_mount(str(scratch))
    assert (outer["major"], outer["minor"]) == dev_of(scratch)
    assert not under(scratch, outer["target"])

    root = n.find_mount("/")
    assert root["target"] == "/"
    assert (root["major"], root["minor"]) == dev_of("/")

    with pytest.raises(FileNotFoundError) as e:
        n.find_mount(str(scratch / "missing"))
    assert e.value.filename == str(scratch / "missing")


def test_find_mount_whole_components(scratch: Path):
    a = tmpfs(scratch / "mnt" / "a")
    ab = scratch / "mnt" / "ab"
    ab.mkdir()
    assert n.find_mount(str(ab))["target"] != str(a)
    assert (n.find_mount(str(ab))["major"], n.find_mount(str(ab))["minor"]) == dev_of(ab)
    assert n.mounts_under(str(ab)) == []
    assert [m["target"] for m in n.mounts_under(str(scratch / "mnt"))] == [str(a)]


def test_find_mount_stacked_and_covered(scratch: Path):
    x = tmpfs(scratch / "x")
    first_dev = dev_of(x)
    m = tmpfs(x / "m")
    # A second tmpfs on x covers the first one and the mount on x/m inside it.
    tmpfs(x)
    assert dev_of(x) != first_dev
    found = n.find_mount(str(x))
    assert found["target"] == str(x)
    assert (found["major"], found["minor"]) == dev_of(x)

    assert not m.exists()  # the cover is empty
    assert not n.is_mountpoint(str(m))
    m.mkdir()  # a plain directory in the cover, with a hidden mount at the same path
    found = n.find_mount(str(m))
    assert found["target"] == str(x)
    assert (found["major"], found["minor"]) == dev_of(m)
    assert not n.is_mountpoint(str(m))

    order = n.mounts_under(str(x))
    assert [e["target"] for e in order] == [str(m), str(x), str(x)]
    assert (order[1]["major"], order[1]["minor"]) == dev_of(x)  # the cover before the covered
    assert (order[2]["major"], order[2]["minor"]) == first_dev

    # The mount on x/m cannot be reached by path until the cover is gone.
    assert n.umount_tree(str(x)) == 3
    assert targets_under(scratch) == []


def test_mounts_under_order(scratch: Path):
    r = tmpfs(scratch / "r")
    tmpfs(r)  # stacked
    a = tmpfs(r / "a")
    b = tmpfs(a / "b")
    c = tmpfs(r / "c")
    other = tmpfs(scratch / "rr")  # a sibling whose name starts with "r"

    by_id = {m["id"]: m for m in mountinfo()}
    order = n.mounts_under(str(r))
    assert [m["target"] for m in order] == [str(b), str(c), str(a), str(r), str(r)]
    for m in order:
        assert by_id[m["id"]]["target"] == m["target"]
    # The upper of the two on r first: the lower is its parent.
    assert order[4]["id"] == order[3]["parent_id"]
    assert str(other) not in [m["target"] for m in order]
    assert [m["target"] for m in n.mounts_under(str(b))] == [str(b)]

    # It is the order to unmount them in: every step succeeds.
    for m in order:
        n.umount(m["target"])
    assert targets_under(scratch) == [str(other)]
    n.umount(str(other))


def test_mounts_under_missing_path(scratch: Path):
    assert n.mounts_under(str(scratch / "missing" / "deeper")) == []
    assert n.umount_tree(str(scratch / "missing")) == 0
    assert not n.is_mountpoint(str(scratch / "missing"))


def test_is_mountpoint_self_bind(scratch: Path):
    d = scratch / "d"
    d.mkdir()
    f = scratch / "f"
    f.write_text("file")
    assert not n.is_mountpoint(str(d))
    n.bind(str(d), str(d))
    n.bind(str(f), str(f))
    # st_dev does not change on a bind of the same filesystem: only the table knows.
    assert os.stat(d).st_dev == os.stat(scratch).st_dev
    assert n.is_mountpoint(str(d))
    assert n.is_mountpoint(str(f))
    assert n.is_mountpoint(Path(d))  # os.PathLike is accepted
    assert not n.is_mountpoint(str(scratch))
    assert n.is_mountpoint("/")
    n.umount(str(d))
    n.umount(str(f))
    assert not n.is_mountpoint(str(d))
    assert not n.is_mountpoint(str(f))


# ------------------------------------------------------------------------- umount_tree, errors


def test_umount_tree_leaves_nothing(scratch: Path):
    top = tmpfs(scratch / "top")
    tmpfs(top)
    tmpfs(top / "a")
    tmpfs(top / "a" / "b")
    tmpfs(top / "a" / "b")
    tmpfs(top / ODD_NAME)
    (top / "bound").mkdir()
    n.bind(str(top / "a"), str(top / "bound"), recursive=True)  # brings a/b (both) along
    expected = len(targets_under(top))
    assert expected == 9
    assert n.umount_tree(str(top)) == expected
    assert targets_under(scratch) == []
    assert n.umount_tree(str(top)) == 0


def test_umount_tree_busy_then_detach(scratch: Path):
    top = tmpfs(scratch / "top")
    busy = tmpfs(top / "busy")
    tmpfs(top / "idle")
    fd = os.open(busy / "open", os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        with pytest.raises(OSError) as e:
            n.umount_tree(str(top))
        assert e.value.errno == errno.EBUSY
        assert e.value.filename == str(busy)
        # Everything else that could go went; the busy mount and its parent stay.
        assert targets_under(scratch) == [str(top), str(busy)]
        assert n.umount_tree(str(top), detach=True) == 2
        assert targets_under(scratch) == []
        os.write(fd, b"still writable after a lazy unmount")
    finally:
        os.close(fd)


def test_umount_tree_dead_fuse(scratch: Path):
    """A FUSE mount whose daemon is gone answers ENOTCONN to stat; it must still be found and
    unmounted."""
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse")
    target = scratch / "fuse"
    target.mkdir()
    fd = os.open("/dev/fuse", os.O_RDWR)
    try:
        n.mount(
            "dead",
            str(target),
            "fuse.dead",
            n.MS_NOSUID | n.MS_NODEV,
            f"fd={fd},rootmode=40000,user_id=0,group_id=0",
        )
    finally:
        os.close(fd)  # the connection is aborted: nobody serves the mount
    with pytest.raises(OSError) as e:
        os.stat(target)
    assert e.value.errno == errno.ENOTCONN
    assert n.is_mountpoint(str(target))
    assert [m["fstype"] for m in n.mounts_under(str(target))] == ["fuse.dead"]
    assert n.umount_tree(str(target)) == 1
    assert targets_under(scratch) == []


def test_umount_errors(scratch: Path):
    plain = scratch / "plain"
    plain.mkdir()
    with pytest.raises(OSError) as e:
        n.umount(str(plain))
    assert e.value.errno == errno.EINVAL
    assert e.value.filename == str(plain)
    with pytest.raises(FileNotFoundError) as e:
        n.umount(str(scratch / "missing"))
    assert e.value.filename == str(scratch / "missing")


def test_mount_errors(scratch: Path):
    missing = scratch / "missing"
    with pytest.raises(FileNotFoundError) as e:
        n.mount("tmpfs", str(missing), "tmpfs")
    assert e.value.filename == str(missing)
    assert e.value.filename2 is None  # "tmpfs" is not a path

    target = scratch / "t"
    target.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        n.bind(str(scratch / "nosrc"), str(target))
    assert (e.value.filename, e.value.filename2) == (str(target), str(scratch / "nosrc"))
    with pytest.raises(FileNotFoundError) as e:
        n.bind(str(scratch / "nosrc"), str(target), readonly=True)
    assert (e.value.filename, e.value.filename2) == (str(target), str(scratch / "nosrc"))
    with pytest.raises(FileNotFoundError) as e:
        n.bind(str(target), str(missing), readonly=True)
    assert e.value.filename == str(missing)
    with pytest.raises(OSError) as e:
        n.mount("none", str(target), "no-such-filesystem-type")
    assert e.value.errno == errno.ENODEV
    assert targets_under(scratch) == []


# ----------------------------------------------------------------------------------- bind


def test_bind_readonly(scratch: Path):
    src = tmpfs(scratch / "src", n.MS_NOSUID | n.MS_NODEV | n.MS_NOEXEC)
    (src / "f").write_text("data")
    dst = scratch / "dst"
    dst.mkdir()
    n.bind(str(src), str(dst), readonly=True)

    assert (dst / "f").read_text() == "data"
    with pytest.raises(OSError) as e:
        (dst / "new").write_text("x")
    assert e.value.errno == errno.EROFS
    with pytest.raises(OSError) as e:
        open(dst / "f", "w")
    assert e.value.errno == errno.EROFS
    (src / "g").write_text("source stays writable")
    assert (dst / "g").exists()

    # Read-only is added, nothing inherited is lost.
    flags = os.statvfs(dst).f_flag
    for flag in (os.ST_RDONLY, os.ST_NOSUID, os.ST_NODEV, os.ST_NOEXEC):
        assert flags & flag, flag
    entry = n.find_mount(str(dst))
    assert entry["target"] == str(dst)
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(entry["vfs_options"].split(","))
    assert not os.statvfs(src).f_flag & os.ST_RDONLY
    assert n.umount_tree(str(scratch)) == 2


def test_bind_recursive(scratch: Path):
    src = tmpfs(scratch / "src")
    sub = tmpfs(src / "sub")
    (sub / "f").write_text("in submount")

    plain = scratch / "plain"
    plain.mkdir()
    n.bind(str(src), str(plain))
    assert not (plain / "sub" / "f").exists()  # a non-recursive bind leaves submounts out
    n.umount(str(plain))

    rw = scratch / "rw"
    rw.mkdir()
    n.bind(str(src), str(rw), recursive=True)
    assert (rw / "sub" / "f").read_text() == "in submount"
    (rw / "sub" / "g").write_text("written through the bind")
    assert (sub / "g").exists()

    ro = scratch / "ro"
    ro.mkdir()
    n.bind(str(src), str(ro), readonly=True, recursive=True)
    assert (ro / "sub" / "f").read_text() == "in submount"
    for path in (ro / "x", ro / "sub" / "x"):
        with pytest.raises(OSError) as e:
            path.write_text("x")
        assert e.value.errno == errno.EROFS
    assert [m["target"] for m in n.mounts_under(str(ro))] == [str(ro / "sub"), str(ro)]
    assert n.umount_tree(str(scratch)) == 6


# ----------------------------------------------------------------------------------- overlay


def _layers(base: Path, count: int, name: str = "layer") -> list[Path]:
    out = []
    for i in range(count):
        layer = base / f"{name}-{i:03d}"
        layer.mkdir(parents=True)
        (layer / f"only-{i:03d}").write_text(str(i))
        (layer / "shared").write_text(str(i))
        out.append(layer)
    return out


def test_overlay_three_layers(scratch: Path):
    lowers = _layers(scratch, 3)
    upper, work, merged = scratch / "upper", scratch / "work", scratch / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    n.fsmount_overlay(
        str(merged), [str(p) for p in lowers], str(upper), str(work), ["index=off", "volatile"]
    )

    names = sorted(os.listdir(merged))
    assert names == ["only-000", "only-001", "only-002", "shared"]
    assert (merged / "shared").read_text() == "0"  # lowerdirs[0] is the uppermost
    for i in range(3):
        assert (merged / f"only-{i:03d}").read_text() == str(i)

    (merged / "new").write_text("upper")
    (merged / "only-002").write_text("changed")
    assert (upper / "new").read_text() == "upper"
    assert (upper / "only-002").read_text() == "changed"
    assert (lowers[2] / "only-002").read_text() == "2"
    os.unlink(merged / "only-001")
    wh = os.lstat(upper / "only-001")  # overlay whiteout: char device 0/0
    assert os.major(wh.st_rdev) == 0 and os.minor(wh.st_rdev) == 0
    assert (lowers[1] / "only-001").exists()

    entry = n.find_mount(str(merged))
    assert entry["fstype"] == "overlay" and entry["target"] == str(merged)
    opts = entry["fs_options"].split(",")
    assert f"upperdir={upper}" in opts and f"workdir={work}" in opts
    assert n.umount_tree(str(merged)) == 1
    assert targets_under(scratch) == []


def test_overlay_200_layers(scratch: Path):
    """More layers than one page of absolute lowerdir= paths can name."""
    deep = scratch / ("long-directory-name-" * 3)
    lowers = _layers(deep, 200, "a-rather-long-layer-directory-name")
    assert len(":".join(str(p) for p in lowers)) > 4096 * 3
    upper, work, merged = scratch / "upper", scratch / "work", scratch / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    n.fsmount_overlay(str(merged), [str(p) for p in lowers], str(upper), str(work), ["index=off"])
    try:
        names = set(os.listdir(merged))
        assert names == {f"only-{i:03d}" for i in range(200)} | {"shared"}
        assert (merged / "shared").read_text() == "0"
        assert (merged / "only-199").read_text() == "199"
        (merged / "w").write_text("up")
        assert (upper / "w").read_text() == "up"
    finally:
        n.umount(str(merged))


def test_overlay_readonly_without_upper(scratch: Path):
    lowers = _layers(scratch, 2)
    merged = scratch / "merged"
    merged.mkdir()
    n.fsmount_overlay(str(merged), [str(p) for p in lowers], None, None, [], readonly=True)
    try:
        assert (merged / "only-001").read_text() == "1"
        with pytest.raises(OSError) as e:
            (merged / "new").write_text("x")
        assert e.value.errno == errno.EROFS
        assert os.statvfs(merged).f_flag & os.ST_RDONLY
        assert "ro" in n.find_mount(str(merged))["vfs_options"].split(",")
    finally:
        n.umount(str(merged))


def test_overlay_long_layer_path(scratch: Path):
    """A layer path past fsconfig's 255-byte string limit goes as an open directory."""
    long = scratch / "/".join(["d" * 60] * 5)
    long.mkdir(parents=True)
    assert len(str(long)) > 255
    (long / "from-long").write_text("long")
    short = _layers(scratch, 1)
    merged = scratch / "merged"
    merged.mkdir()
    n.fsmount_overlay(str(merged), [str(long), str(short[0])], readonly=True)
    try:
        assert (merged / "from-long").read_text() == "long"
        assert (merged / "only-000").read_text() == "0"
    finally:
        n.umount(str(merged))


def test_overlay_errors_carry_kernel_message(scratch: Path):
    lowers = _layers(scratch, 2)
    merged = scratch / "merged"
    merged.mkdir()
    bad = scratch / "no-such-layer"
    with pytest.raises(FileNotFoundError) as e:
        n.fsmount_overlay(str(merged), [str(lowers[0]), str(bad)], None, None, [])
    assert e.value.filename2 == str(bad)
    # overlayfs explains a missing layer only in the kernel log.
    if os.access("/dev/kmsg", os.R_OK):
        assert e.value.filename.startswith(f"{merged}: overlayfs: ")
        assert "failed to resolve" in e.value.filename and str(bad) in e.value.filename
        assert "failed to resolve" in str(e.value)

    not_dir = lowers[0] / "only-000"  # explained in the fs context itself
    with pytest.raises(OSError) as e:
        n.fsmount_overlay(str(merged), [str(lowers[1]), str(not_dir)], None, None, [])
    assert e.value.filename == f"{merged}: overlay: {not_dir} is not a directory"
    assert e.value.filename2 == str(not_dir)

    with pytest.raises(OSError) as e:
        n.fsmount_overlay(str(merged), [str(lowers[0])], None, None, ["no_such_option=1"])
    assert e.value.errno == errno.EINVAL
    assert "no_such_option" in e.value.filename
    assert e.value.filename2 == "no_such_option=1"

    upper = scratch / "upper"
    upper.mkdir()
    with pytest.raises(OSError) as e:  # an upper needs a workdir
        n.fsmount_overlay(str(merged), [str(lowers[0])], str(upper), None, [])
    assert e.value.errno == errno.EINVAL
    assert "workdir" in e.value.filename

    with pytest.raises(FileNotFoundError) as e:
        n.fsmount_overlay(str(scratch / "no-target"), [str(p) for p in lowers], readonly=True)
    assert e.value.filename == str(scratch / "no-target")
    with pytest.raises(ValueError):
        n.fsmount_overlay(str(merged), [], None, None, [])
    assert targets_under(scratch) == []
