"""POSIX behaviour of the union engine against the kernel's overlayfs.

Each test runs the same operations on a union mount (engine, aufs-format branches) and on an
overlay mount of the same layers (overlay format, redirect_dir=on, index=on), then compares
what the operations returned (data, errno names) and the visible trees (tests/treeutil.describe:
type, mode, owner, size, content, symlink targets, devices, xattrs, hardlink groups; inode
numbers and times left out).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from treeutil import describe
from unionutil import BOTTOM, CAP_NET_RAW, TOP, Stacks

from storagekit import _native as n

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="FUSE mounts need root")

Result = list[Any]


def attempt(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """fn's result, or the errno name it failed with."""
    try:
        r = fn(*args, **kw)
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e))
    return "ok" if r is None else r


def read(p: Path) -> bytes:
    return p.read_bytes()


def write(p: Path, data: bytes, mode: str = "wb") -> None:
    with open(p, mode) as f:
        f.write(data)


def punch(fd: int, off: int, length: int) -> None:
    """fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    if libc.fallocate(fd, 0x01 | 0x02, off, length) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def both(stacks: Stacks, ops: Callable[[Path], Result]) -> tuple[Path, Path]:
    """Runs ops on a union and on an overlay of the same layers; results and trees must match."""
    u = stacks.union()
    o = stacks.overlay()
    ru, ro = ops(u), ops(o)
    assert ru == ro
    assert describe(u, times=False) == describe(o, times=False)
    return u, o


def test_layers_show_the_same_tree(stacks: Stacks) -> None:
    u, o = both(stacks, lambda root: [sorted(os.listdir(root))])
    tree = describe(u, times=False)
    assert "/etc/conf.d/b" not in tree  # whiteout in the upper layer
    assert "/del/gone.txt" not in tree and "/del/keep.txt" in tree
    assert sorted(os.listdir(u / "opq")) == ["new1"]  # opaque directory
    assert "/usr/share/doc" not in tree
    assert sorted(os.listdir(u / "tree/sub")) == ["leaf", "leaf2"]  # merged
    assert read(u / "etc/passwd").startswith(b"root:x:0:0\nnobody")
    assert not any(".wh." in p for p in tree)


def test_modify_files_across_layers(stacks: Stacks) -> None:
    def ops(root: Path) -> Result:
        out = []
        write(root / "etc/hosts", b"::1 localhost\n", "ab")  # bottom layer, append
        write(root / "etc/passwd", b"replaced\n")  # upper layer, O_TRUNC
        write(root / "toponly/file", b"more", "r+b")  # in place, no truncation
        os.truncate(root / "var/lib/data.bin", 1000)  # truncate(2) on a lower file
        with open(root / "tree/sub/leaf", "r+b") as f:
            f.seek(2)
            f.write(b"AF")
        write(root / "etc/conf.d/new", b"new file in a merged dir")
        write(root / "brand-new", b"at the root")
        out.append(attempt(write, root / "etc/conf.d/b", b"x", "r+b"))  # whited out
        out.append(attempt(write, root / "missing/dir/file", b"x"))
        for p in ("etc/hosts", "etc/passwd", "toponly/file", "tree/sub/leaf", "etc/conf.d/new"):
            out.append(read(root / p))
        out.append(os.stat(root / "var/lib/data.bin").st_size)
        return out

    both(stacks, ops)


def test_delete_and_recreate(stacks: Stacks) -> None:
    def ops(root: Path) -> Result:
        out = []
        out.append(attempt(os.unlink, root / "etc/hosts"))  # bottom layer
        out.append(attempt(os.unlink, root / "etc/passwd"))  # both lower layers
        out.append(attempt(os.unlink, root / "toponly/file"))
        out.append(attempt(os.unlink, root / "del/gone.txt"))  # already whited out
        out.append(attempt(os.unlink, root / "etc/conf.d/b"))
        out.append(attempt(os.rmdir, root / "etc"))  # merged, not empty
        out.append(attempt(os.rmdir, root / "empty"))
        out.append(attempt(os.rmdir, root / "toponly"))  # emptied above
        out.append(attempt(os.unlink, root / "del/keep.txt"))
        out.append(attempt(os.rmdir, root / "del"))  # logically empty now
        out.append(attempt(os.rmdir, root / "tree"))
        out.append(attempt(os.unlink, root / "tree"))
        out.append(attempt(os.rmdir, root / "link"))
        # recreate what was deleted: a new directory over a whiteout shows nothing old
        out.append(attempt(os.mkdir, root / "del"))
        out.append(sorted(os.listdir(root / "del")))
        write(root / "del/fresh", b"fresh")
        out.append(attempt(os.mkdir, root / "usr/share/doc"))  # whited out by a lower layer
        out.append(sorted(os.listdir(root / "usr/share/doc")))
        write(root / "etc/hosts", b"recreated")
        out.append(read(root / "etc/hosts"))
        out.append(attempt(os.mkdir, root / "etc/conf.d/b"))  # file name whited out -> dir
        out.append(sorted(os.listdir(root / "etc/conf.d")))
        out.append(sorted(os.listdir(root)))
        return out

    both(stacks, ops)


def test_rename_files(stacks: Stacks) -> None:
    def ops(root: Path) -> Result:
        out = []
        out.append(attempt(os.rename, root / "etc/hosts", root / "hosts.moved"))
        out.append(attempt(os.rename, root / "etc/passwd", root / "etc/conf.d/a"))  # over lower
        out.append(attempt(os.rename, root / "toponly/file", root / "tree/sub/leaf2"))
        out.append(attempt(os.rename, root / "opq/new1", root / "etc/conf.d/b"))  # whited name
        out.append(attempt(os.rename, root / "del/gone.txt", root / "x"))
        write(root / "scratch", b"scratch")
        out.append(attempt(os.rename, root / "scratch", root / "var/lib/data.bin"))
        out.append(attempt(os.rename, root / "link", root / "link2"))
        out.append(attempt(os.rename, root / "bin/ping", root / "etc"))  # file over dir
        out.append(attempt(os.rename, root / "dev/pipe", root / "pipe"))
        # the old names are free again and show nothing of the lower layers
        write(root / "etc/hosts", b"again")
        for p in ("hosts.moved", "etc/conf.d/a", "tree/sub/leaf2", "etc/conf.d/b", "etc/hosts"):
            out.append(attempt(read, root / p))
        out.append(sorted(os.listdir(root / "etc")))
        out.append(sorted(os.listdir(root / "etc/conf.d")))
        return out

    both(stacks, ops)


def test_rename_directories(stacks: Stacks) -> None:
    def ops(root: Path) -> Result:
        out = []
        # a directory merged from both lower layers moves with all its content
        out.append(attempt(os.rename, root / "tree", root / "moved"))
        out.append(sorted(os.listdir(root / "moved")))
        out.append(sorted(os.listdir(root / "moved/sub")))
        out.append(attempt(read, root / "moved/sub/leaf"))
        out.append(attempt(os.stat, root / "tree") if not (root / "tree").exists() else "exists")
        # the old name is free: a new directory there is empty
        os.mkdir(root / "tree")
        out.append(sorted(os.listdir(root / "tree")))
        # onto an existing empty directory of a lower layer, and over a non-empty one
        out.append(attempt(os.rename, root / "opq", root / "empty"))
        out.append(sorted(os.listdir(root / "empty")))
        out.append(attempt(os.rename, root / "etc", root / "moved"))
        out.append(attempt(os.rename, root / "etc/conf.d", root / "etc/conf.d/inside"))
        # one that only exists in the writable branch, into a lower directory
        os.makedirs(root / "fresh/a/b")
        write(root / "fresh/a/b/c", b"c")
        out.append(attempt(os.rename, root / "fresh", root / "var/fresh"))
        out.append(sorted(os.listdir(root / "var")))
        # onto a name whited out by a lower layer
        out.append(attempt(os.rename, root / "toponly", root / "usr/share/doc"))
        out.append(sorted(os.listdir(root / "usr/share/doc")))
        # a renamed tree keeps working: write, delete and rename inside it
        write(root / "moved/sub/leaf2", b"changed")
        os.unlink(root / "moved/top")
        os.rename(root / "moved/sub", root / "moved/sub2")
        out.append(sorted(os.listdir(root / "moved")))
        return out

    both(stacks, ops)


def test_hardlinks(stacks: Stacks) -> None:
    def ops(root: Path) -> Result:
        out = []
        # a lower file gets a second name: both names share one inode from then on
        os.link(root / "etc/hosts", root / "hosts.link")
        write(root / "hosts.link", b"via the link\n", "ab")
        out.append(read(root / "etc/hosts"))
        a, b = os.stat(root / "etc/hosts"), os.stat(root / "hosts.link")
        out.append((a.st_ino == b.st_ino, a.st_nlink, b.st_nlink))
        # hardlinks inside a lower layer survive the copy-up of one of the names
        write(root / "bin/tool", b"# patched\n", "ab")
        out.append(read(root / "bin/tool-link"))
        a, b = os.stat(root / "bin/tool"), os.stat(root / "bin/tool-link")
        out.append((a.st_ino == b.st_ino, a.st_nlink, b.st_nlink))
        os.unlink(root / "bin/tool")
        out.append(os.stat(root / "bin/tool-link").st_nlink)
        # links of new files, and EEXIST / EPERM cases
        write(root / "n1", b"n1")
        os.link(root / "n1", root / "etc/n2")
        out.append(os.stat(root / "n1").st_nlink)
        out.append(attempt(os.link, root / "n1", root / "etc/passwd"))
        out.append(attempt(os.link, root / "etc", root / "etc.link"))
        return out

    both(stacks, ops)


def test_hardlink_inode_numbers_stay(stacks: Stacks) -> None:
    u = stacks.union()
    before = {p: os.stat(u / p).st_ino for p in ("etc/hosts", "bin/tool", "tree", "tree/sub")}
    assert os.stat(u / "bin/tool").st_ino == os.stat(u / "bin/tool-link").st_ino
    write(u / "etc/hosts", b"x", "ab")
    write(u / "bin/tool", b"x", "ab")
    write(u / "tree/sub/new", b"copies tree and tree/sub up")
    after = {p: os.stat(u / p).st_ino for p in before}
    assert after == before
    # readdir's d_ino agrees with stat
    for entry in os.scandir(u / "bin"):
        assert entry.inode() == os.stat(entry.path, follow_symlinks=False).st_ino
    assert os.stat(u).st_dev == os.stat(u / "etc/hosts").st_dev
    # pseudo-link bookkeeping of the copied-up hardlinked file, as aufs keeps it
    plnk = os.listdir(stacks.rw / ".wh..wh.plnk")
    assert len(plnk) == 1 and plnk[0].startswith(f"{before['bin/tool']}.")
    assert os.stat(u / "bin/tool").st_nlink == 2


def test_metadata_changes(stacks: Stacks) -> None:
    def ops(root: Path) -> Result:
        out = []
        os.chmod(root / "etc/hosts", 0o600)
        os.chown(root / "etc/passwd", 1000, 1001)
        os.utime(
            root / "var/lib/data.bin", ns=(1_600_000_000_000_000_000, 1_500_000_000_123_456_789)
        )
        os.chmod(root / "tree/sub", 0o750)  # a merged directory
        os.chown(root / "link", 42, 43, follow_symlinks=False)
        os.chmod(root / "bin/tool", 0o4755)
        os.utime(root / "usr", ns=(1_400_000_000_000_000_000, 1_400_000_000_000_000_000))
        for p in ("etc/hosts", "etc/passwd", "var/lib/data.bin", "tree/sub", "bin/tool", "usr"):
            st = os.lstat(root / p)
            out.append((p, stat.filemode(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns))
        st = os.lstat(root / "link")
        out.append((st.st_uid, st.st_gid))
        out.append(sorted(os.listdir(root / "tree/sub")))  # still merged after the copy-up
        return out

    both(stacks, ops)


def test_xattrs(stacks: Stacks) -> None:
    def ops(root: Path) -> Result:
        out = []
        out.append(os.getxattr(root / "etc/hosts", "user.note"))
        out.append(os.getxattr(root / "bin/ping", "security.capability") == CAP_NET_RAW)
        out.append(sorted(x for x in os.listxattr(root / "bin/ping") if "overlay" not in x))
        os.setxattr(root / "etc/passwd", "user.new", b"value")
        os.removexattr(root / "etc/hosts", "user.note")
        out.append(attempt(os.removexattr, root / "etc/conf.d/a", "user.none"))
        out.append(attempt(os.getxattr, root / "etc/hosts", "user.note"))
        os.setxattr(root / "tree", "user.dir", b"on a merged directory")
        write(root / "newcap", b"x")
        os.setxattr(root / "newcap", "security.capability", CAP_NET_RAW)
        out.append(os.getxattr(root / "newcap", "security.capability") == CAP_NET_RAW)
        # a write by a process drops the capability, as on a local filesystem
        write(root / "bin/ping", b"changed")
        out.append(attempt(os.getxattr, root / "bin/ping", "security.capability"))
        out.append(attempt(os.setxattr, root / "etc/hosts", "user.x", b"1", os.XATTR_REPLACE))
        out.append(os.listxattr(root / "link", follow_symlinks=False) == [])
        return out

    both(stacks, ops)


def test_special_files(stacks: Stacks) -> None:
    def ops(root: Path) -> Result:
        out = []
        os.mkfifo(root / "etc/fifo", 0o640)
        os.mknod(root / "dev/zero", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
        os.mknod(root / "dev/sda", 0o660 | stat.S_IFBLK, os.makedev(8, 0))
        os.symlink("../etc/passwd", root / "bin/pw")
        os.symlink("/" + "x" * 500, root / "long-target")
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(root / "sock"))
        s.close()
        out.append(os.readlink(root / "bin/pw"))
        out.append(read(root / "bin/pw"))
        out.append(os.readlink(root / "link"))
        out.append(len(os.readlink(root / "long-target")))
        with open(root / "dev/null", "wb") as f:  # a lower device node works as a device
            out.append(f.write(b"discarded"))
        with open(root / "dev/zero", "rb") as f:
            out.append(f.read(4))
        out.append(stat.S_ISSOCK(os.lstat(root / "sock").st_mode))
        os.unlink(root / "dev/pipe")
        out.append(attempt(os.mkfifo, root / "dev/null"))
        return out

    both(stacks, ops)


def test_fifo_passes_data(stacks: Stacks) -> None:
    u = stacks.union()
    fifo = u / "dev/pipe"
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    t.start()
    write(fifo, b"through a lower fifo")
    t.join(10)
    assert got == [b"through a lower fifo"]


NOBODY_OPS = textwrap.dedent(
    """
    import errno, json, os, sys
    root = sys.argv[1]
    def t(fn, *a):
        try:
            r = fn(*a)
        except OSError as e:
            return errno.errorcode[e.errno]
        return r if isinstance(r, (bool, str, list)) else "ok"
    def rd(p):
        with open(os.path.join(root, p), "rb") as f:
            return f.read().decode()
    def wr(p, mode="wb"):
        with open(os.path.join(root, p), mode) as f:
            f.write(b"nobody was here")
    P = lambda p: os.path.join(root, p)
    out = [
        t(rd, "etc/passwd"),
        t(wr, "etc/passwd", "ab"),
        t(rd, "private/secret"),
        t(os.listdir, P("private")),
        t(os.stat, P("private/secret")),
        t(wr, "shared/owned", "ab"),
        t(rd, "shared/owned"),
        t(wr, "shared/roots", "ab"),
        t(wr, "shared/mine"),
        t(os.unlink, P("shared/roots")),
        t(wr, "sticky/mine"),
        t(os.unlink, P("sticky/roots")),
        t(wr, "sticky/roots", "ab"),
        t(os.unlink, P("sticky/mine")),
        t(os.chmod, P("etc/hosts"), 0o777),
        t(os.chmod, P("shared/owned"), 0o600),
        t(os.chown, P("shared/owned"), 0, 0),
        t(os.mkdir, P("newdir")),
        t(wr, "etc/new"),
        t(os.rename, P("shared/owned"), P("shared/renamed")),
        t(os.rename, P("etc/hosts"), P("shared/h")),
        t(os.rmdir, P("empty")),
        t(os.mkdir, P("shared/d")),
        t(os.setxattr, P("shared/d"), "user.a", b"1"),
        t(os.setxattr, P("etc/hosts"), "user.a", b"1"),
        t(os.getxattr, P("etc/hosts"), "user.note"),
        t(os.link, P("etc/hosts"), P("shared/hl")),
        t(os.symlink, "x", P("shared/sl")),
        t(os.utime, P("shared/roots")),
        t(os.utime, P("shared/d")),
        t(os.truncate, P("etc/hosts"), 0),
        t(os.access, P("private"), os.R_OK),
        t(os.access, P("bin/tool"), os.X_OK),
        t(os.access, P("etc/passwd"), os.W_OK),
        sorted(t(os.listdir, P("shared"))),
    ]
    print(json.dumps(out))
    """
)


@pytest.fixture
def open_stacks() -> Stacks:
    """Stacks under a directory that uid 65534 can reach."""
    base = Path(tempfile.mkdtemp(prefix="sk-union-"))
    os.chmod(base, 0o755)
    s = Stacks(base, [BOTTOM, TOP])
    try:
        yield s
    finally:
        s.close()
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def test_unprivileged_user_gets_local_answers(open_stacks: Stacks) -> None:
    def ops(root: Path) -> Result:
        os.chmod(root, 0o755)
        r = subprocess.run(
            ["/usr/bin/python3", "-c", NOBODY_OPS, str(root)],
            user=65534,
            group=65534,
            extra_groups=[],
            capture_output=True,
            text=True,
            check=True,
        )
        return [r.stdout]

    u = open_stacks.union()
    o = open_stacks.overlay()
    ru, ro = ops(u), ops(o)
    assert ru == ro
    assert "EACCES" in ru[0] and "EPERM" in ru[0]
    assert describe(u, times=False) == describe(o, times=False)


def test_whiteout_names_are_invisible_and_refused(stacks: Stacks) -> None:
    u = stacks.union()
    assert attempt(os.stat, u / "etc/conf.d/.wh.b") == "ENOENT"
    assert attempt(os.stat, u / ".wh..wh.aufs") == "ENOENT"
    assert attempt(write, u / ".wh.foo", b"x") in ("EPERM", "EINVAL")
    assert attempt(os.mkdir, u / "etc/.wh..wh..opq") in ("EPERM", "EINVAL")
    assert attempt(os.rename, u / "etc/hosts", u / "etc/.wh.hosts") in ("EPERM", "EINVAL")
    assert attempt(os.link, u / "etc/hosts", u / ".wh.x") in ("EPERM", "EINVAL")
    assert attempt(os.symlink, "x", u / ".wh.y") in ("EPERM", "EINVAL")
    assert attempt(write, u / ("n" * 243), b"x") == "ENAMETOOLONG"  # AUFS_MAX_NAMELEN
    write(u / ("n" * 242), b"x")
    for dirpath, dirnames, filenames in os.walk(u):
        assert not [x for x in dirnames + filenames if x.startswith(".wh.")], dirpath
    assert os.statvfs(u).f_namemax == 242


def long_name_ops(root: Path, limit: int) -> Result:
    """Every operation on a missing name one byte over `limit` (the mount's f_namemax), and
    the same ones on a missing name at the limit."""
    out = []
    for length in (limit + 1, limit):
        nx = root / ("n" * length)
        out.append(attempt(os.stat, nx))
        out.append(attempt(os.lstat, nx))
        out.append(attempt(os.chmod, nx, 0o600))
        out.append(attempt(os.chown, nx, 65534, 65534))
        out.append(attempt(os.lchown, nx, 65534, 65534))
        out.append(attempt(os.truncate, nx, 0))
        out.append(attempt(os.link, nx, root / "etc/new-link"))
        out.append(attempt(os.rename, nx, root / "etc/new-name"))
        out.append(attempt(os.rmdir, nx))
        out.append(attempt(os.unlink, nx))
        out.append(attempt(os.listdir, nx))
        out.append(attempt(os.readlink, nx))
        # the missing name as the target of operations on existing entries
        out.append(attempt(os.link, root / "etc/hosts", root / "etc" / nx.name))
        out.append(attempt(os.rename, root / "etc/passwd", root / "etc" / nx.name))
        out.append(attempt(os.symlink, "hosts", root / "etc" / nx.name))
        out.append(attempt(os.mkdir, root / "etc" / nx.name))
        out.append(attempt(os.mknod, root / "etc" / nx.name, stat.S_IFIFO | 0o600))
        # at the limit the makers succeed: undo what they made before the next one
        attempt(os.unlink, root / "etc" / nx.name)
        attempt(os.rmdir, root / "etc" / nx.name)
    return out


def test_names_over_the_limit_are_too_long_even_when_missing(stacks: Stacks) -> None:
    """The engine's limit is aufs's 242 bytes, overlay's that of its layers (ext4: 255): one
    byte over it, each operation on a missing name fails with ENAMETOOLONG (not ENOENT), on
    the union as on kernel overlay at its own limit."""
    u = stacks.union()
    o = stacks.overlay()
    lu, lo = os.statvfs(u).f_namemax, os.statvfs(o).f_namemax
    assert (lu, lo) == (242, 255)
    ru, ro = long_name_ops(u, lu), long_name_ops(o, lo)
    assert ru == ro
    over = ru[: len(ru) // 2]
    assert set(over) == {"ENAMETOOLONG"}, over
    assert describe(u, times=False) == describe(o, times=False)


def test_a_listing_read_again_from_its_start_shows_what_changed(stacks: Stacks) -> None:
    """rewinddir (a read from offset 0 of an open directory) lists the directory as it is
    now, as POSIX asks and overlay does; the merged listing is not frozen at opendir."""

    def ops(root: Path) -> Result:
        fd = os.open(root / "etc", os.O_RDONLY | os.O_DIRECTORY)
        try:
            out = [sorted(os.listdir(fd))]  # os.listdir(fd) rewinds a duplicate of fd
            write(root / "etc/new", b"new")
            os.unlink(root / "etc/hosts")
            os.mkdir(root / "etc/newdir")
            out.append(sorted(os.listdir(fd)))
            os.rename(root / "etc/new", root / "etc/conf.d/moved")
            out.append(sorted(os.listdir(fd)))
            return out
        finally:
            os.close(fd)

    u, _ = both(stacks, ops)
    assert sorted(os.listdir(u / "etc")) == ["conf.d", "newdir", "passwd"]


def test_shared_mmap_write(stacks: Stacks) -> None:
    def ops(root: Path) -> Result:
        p = root / "var/lib/data.bin"  # lower file: opening it for writing copies it up
        with open(p, "r+b") as f:
            with mmap.mmap(f.fileno(), 0, mmap.MAP_SHARED) as m:
                m[0:5] = b"HELLO"
                m[8192:8197] = b"WORLD"
                m.flush()
        with open(p, "rb") as f:  # a private mapping of another lower file
            with mmap.mmap(f.fileno(), 0, mmap.MAP_PRIVATE, mmap.PROT_READ) as m:
                first = m[:5]
        with (
            open(root / "etc/hosts", "rb") as f,
            mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m,
        ):
            hosts = m[:]
        return [read(p)[:10], read(p)[8190:8200], first, hosts]

    both(stacks, ops)


def test_concurrent_writers(stacks: Stacks) -> None:
    def ops(root: Path) -> Result:
        target = root / "var/lib/data.bin"  # lower: the first writer copies it up
        size = os.path.getsize(target)

        def writer(i: int) -> None:
            with open(target, "r+b") as f:
                for j in range(i, size // 64, 8):
                    f.seek(j * 64)
                    f.write(bytes([65 + i]) * 64)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # several processes appending to one file
        log = root / "etc/log"
        code = (
            "import os, sys\n"
            "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)\n"
            "for _ in range(200): os.write(fd, sys.argv[2].encode() * 16)\n"
        )
        procs = [subprocess.Popen([sys.executable, "-c", code, str(log), c]) for c in "wxyz"]
        for p in procs:
            assert p.wait() == 0
        data = read(log)
        os.unlink(log)  # the interleaving differs from run to run; the records must not
        records = sorted(data[i : i + 16] for i in range(0, len(data), 16))
        return [read(target), len(data), records == sorted(c.encode() * 16 for c in "wxyz" * 200)]

    both(stacks, ops)


LOCKER = textwrap.dedent(
    """
    import fcntl, os, struct, sys
    path, kind = sys.argv[1], sys.argv[2]
    fd = os.open(path, os.O_RDWR)
    try:
        if kind == "flock":
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
        print("got")
    except OSError as e:
        print("busy" if e.errno in (11, 13) else e.errno)
    """
)


def test_flock_and_fcntl_locks_exclude(stacks: Stacks) -> None:
    def ops(root: Path) -> Result:
        out = []
        p = root / "etc/passwd"
        for kind in ("flock", "fcntl"):
            fd = os.open(p, os.O_RDWR)
            try:
                if kind == "flock":
                    fcntl.flock(fd, fcntl.LOCK_EX)
                else:
                    fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)
                r = subprocess.run(
                    [sys.executable, "-c", LOCKER, str(p), kind],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                out.append(r.stdout.strip())
            finally:
                os.close(fd)
            r = subprocess.run(
                [sys.executable, "-c", LOCKER, str(p), kind],
                capture_output=True,
                text=True,
                check=True,
            )
            out.append(r.stdout.strip())
        return out

    u, _ = both(stacks, ops)


def test_file_io_flags_and_ranges(stacks: Stacks) -> None:
    def ops(root: Path) -> Result:
        out = []
        p = root / "etc/hosts"
        fd = os.open(p, os.O_WRONLY | os.O_APPEND)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"appended\n")  # O_APPEND wins over the offset
        os.fsync(fd)
        os.fdatasync(fd)
        os.close(fd)
        out.append(read(p))
        fd = os.open(root / "etc/passwd", os.O_RDWR | os.O_TRUNC)
        out.append(os.fstat(fd).st_size)
        os.close(fd)
        # O_DIRECT reads and writes with aligned buffers
        buf = mmap.mmap(-1, 4096)
        fd = os.open(root / "var/lib/data.bin", os.O_RDONLY | os.O_DIRECT)
        out.append(os.readv(fd, [buf]))
        os.close(fd)
        out.append(buf[:16])
        fd = os.open(root / "direct", os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
        buf[:] = b"D" * 4096
        out.append(os.writev(fd, [buf]))
        os.close(fd)
        out.append(read(root / "direct")[:4])
        # sparse file: fallocate, punch a hole, SEEK_DATA / SEEK_HOLE
        fd = os.open(root / "sparse", os.O_RDWR | os.O_CREAT, 0o644)
        os.posix_fallocate(fd, 0, 1 << 20)
        os.pwrite(fd, b"x" * 8192, 0)
        os.pwrite(fd, b"y" * 4096, 3 << 20)
        os.fsync(fd)
        punch(fd, 0, 4096)
        out.append(os.fstat(fd).st_size)
        out.append(os.lseek(fd, 0, os.SEEK_DATA))
        out.append(os.lseek(fd, 0, os.SEEK_HOLE))
        out.append(os.lseek(fd, 2 << 20, os.SEEK_DATA))
        out.append(os.pread(fd, 8, 0) + os.pread(fd, 8, 4096))
        os.close(fd)
        # copy_file_range between two files of the union
        src = os.open(root / "var/lib/data.bin", os.O_RDONLY)
        dst = os.open(root / "copy", os.O_WRONLY | os.O_CREAT, 0o644)
        done = 0
        while done < 16384:
            k = os.copy_file_range(src, dst, 16384 - done, done, done)
            assert k > 0
            done += k
        os.close(src)
        os.close(dst)
        out.append(read(root / "copy") == read(root / "var/lib/data.bin"))
        return out

    both(stacks, ops)


def test_statfs_is_the_writable_branch(stacks: Stacks) -> None:
    u = stacks.union()
    a, b = os.statvfs(u), os.statvfs(stacks.rw)
    assert (a.f_bsize, a.f_blocks, a.f_files) == (b.f_bsize, b.f_blocks, b.f_files)
    assert a.f_namemax == 242


def test_read_only_union(stacks: Stacks) -> None:
    u = stacks.union(readonly=True)
    assert read(u / "etc/passwd").startswith(b"root")
    assert attempt(write, u / "etc/passwd", b"x", "ab") == "EROFS"
    assert attempt(os.mkdir, u / "x") == "EROFS"
    assert attempt(os.unlink, u / "etc/hosts") == "EROFS"
    assert sorted(os.listdir(u / "opq")) == ["new1"]
    assert n.find_mount(str(u))["fstype"].startswith("fuse")


def test_reader_open_across_a_copy_up(stacks: Stacks) -> None:
    u = stacks.union()
    p = u / "etc/hosts"
    old = read(p)
    ino = os.stat(p).st_ino
    with open(p, "rb") as reader:
        first = reader.read(5)
        with open(p, "ab") as w:  # copies the file up while the reader holds the lower one
            w.write(b"appended\n")
        with open(p, "r+b") as w2:  # and a second writer shares the copy
            w2.seek(0)
            w2.write(b"1")
        assert read(p) == b"1" + old[1:] + b"appended\n"
        assert os.stat(p).st_ino == ino
        assert os.fstat(reader.fileno()).st_ino == ino
        rest = reader.read()
        # the reader sees the file it opened (passthrough: the lower one, as overlayfs did
        # before 4.19) or, through the daemon, what the union shows now
        assert first + rest in (old, b"1" + old[1:] + b"appended\n")
    with open(p, "rb") as again:
        assert again.read() == b"1" + old[1:] + b"appended\n"


ACL_USER_OPS = textwrap.dedent(
    """
    import errno, json, os, sys
    root = sys.argv[1]
    os.umask(0o077)
    def t(fn, *a):
        try:
            r = fn(*a)
        except OSError as e:
            return errno.errorcode[e.errno]
        return r if isinstance(r, (bool, str, list)) else "ok"
    def rd(p):
        with open(os.path.join(root, p), "rb") as f:
            return f.read().decode()
    def wr(p, mode="wb"):
        with open(os.path.join(root, p), mode) as f:
            f.write(b"x")
    print(json.dumps([
        t(rd, "private/secret"),
        t(wr, "private/secret", "ab"),
        t(os.listdir, os.path.join(root, "private")),
        t(wr, "shared/inherits"),
        t(os.mkdir, os.path.join(root, "shared/subdir")),
    ]))
    """
)


def test_posix_acls(open_stacks: Stacks) -> None:
    def ops(root: Path) -> Result:
        os.chmod(root, 0o755)
        for args in (
            ["-m", "u:65534:rx", "private"],
            ["-m", "u:65534:r", "private/secret"],
            ["-d", "-m", "u:65534:rwx,g::r", "shared"],  # a default ACL: inherited below
        ):
            subprocess.run(["setfacl", *args[:-1], str(root / args[-1])], check=True)
        r = subprocess.run(
            ["/usr/bin/python3", "-c", ACL_USER_OPS, str(root)],
            user=65534,
            group=65534,
            extra_groups=[],
            capture_output=True,
            text=True,
            check=True,
        )
        acls = subprocess.run(
            ["getfacl", "-p", "--omit-header", "-n", "shared/inherits", "shared/subdir"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [r.stdout, acls, stat.filemode(os.stat(root / "shared/inherits").st_mode)]

    u = open_stacks.union()
    o = open_stacks.overlay()
    ru, ro = ops(u), ops(o)
    assert ru == ro
    assert '"secret"' in ru[0] and "user:65534:rwx" in ru[1]
    assert describe(u, times=False) == describe(o, times=False)


def test_parallel_namespace_changes(stacks: Stacks) -> None:
    def ops(root: Path) -> Result:
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                d = root / "tree" / f"w{i}"
                os.mkdir(d)
                for j in range(30):
                    write(d / f"f{j}", f"{i}.{j}".encode())
                    if j % 3 == 0:
                        os.rename(d / f"f{j}", d / f"r{j}")
                    if j % 5 == 0:
                        os.unlink(d / (f"r{j}" if j % 3 == 0 else f"f{j}"))
                    os.stat(root / "etc/passwd")
                    os.listdir(root / "tree")
                write(root / "etc" / f"by{i}", b"x")  # copy-up races on one directory
                os.unlink(root / "etc/conf.d/a") if i == 0 else None
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [repr(errors), sorted(os.listdir(root / "tree")), sorted(os.listdir(root / "etc"))]

    both(stacks, ops)


def test_open_files_outlive_their_names(stacks: Stacks) -> None:
    def ops(root: Path) -> Result:
        out = []
        f = open(root / "etc/hosts", "r+b")  # noqa: SIM115
        g = open(root / "new", "w+b")  # noqa: SIM115
        g.write(b"unlinked but open")
        g.flush()
        os.unlink(root / "etc/hosts")
        os.unlink(root / "new")
        f.write(b"X")
        f.flush()
        f.seek(0)
        g.seek(0)
        out += [f.read(), g.read(), os.fstat(f.fileno()).st_nlink, os.fstat(g.fileno()).st_nlink]
        out.append(os.fstat(g.fileno()).st_size)
        os.ftruncate(g.fileno(), 3)
        out.append(os.fstat(g.fileno()).st_size)
        f.close()
        g.close()
        out.append(attempt(os.stat, root / "etc/hosts"))
        return out

    both(stacks, ops)
