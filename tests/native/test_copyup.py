"""copy_entry / copy_tree on real files and filesystems, checked against the kernel's answers
(lstat, xattrs, SEEK_DATA/SEEK_HOLE, FIEMAP) and getfacl."""

from __future__ import annotations

import array
import errno
import fcntl
import hashlib
import os
import socket
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from storagekit import _native as n

T0 = 1_234_567_890_123_456_789  # ns; far in the past, so relatime would update atimes on read
CAP_NET_BIND_SERVICE = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)  # vfs_cap_data v2


# ----------------------------------------------------------------------------------- helpers


def write(path: Path, data: bytes | str = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def make_sparse(path: Path, size: int = 8 << 20) -> Path:
    """Data at [0, 64K) and [3M, 3M+64K), holes elsewhere, including the tail."""
    with open(path, "wb") as f:
        f.write(os.urandom(64 << 10))
        f.seek(3 << 20)
        f.write(os.urandom(64 << 10))
        f.truncate(size)
    return path


def data_map(path: Path) -> list[tuple[int, int]]:
    """The data segments of a file as the kernel reports them with SEEK_DATA / SEEK_HOLE."""
    segs = []
    fd = os.open(path, os.O_RDONLY)
    try:
        pos = 0
        while True:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            segs.append((start, end))
            pos = end
    finally:
        os.close(fd)
    return segs


FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_SHARED = 0x2000


def fiemap(path: Path, count: int = 64) -> list[tuple[int, int, int, int]]:
    """(logical, physical, length, flags) of every extent of the file."""
    header = struct.pack("=QQIIII", 0, 2**64 - 1, FIEMAP_FLAG_SYNC, 0, count, 0)
    buf = array.array("B", header + bytes(56 * count))
    with open(path, "rb") as f:
        fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf, True)
    mapped = struct.unpack_from("=I", buf, 20)[0]
    out = []
    for i in range(mapped):
        logical, physical, length, _, _, flags = struct.unpack_from("=QQQQQI", buf, 32 + 56 * i)
        out.append((logical, physical, length, flags))
    return out


def xattrs(path: Path) -> dict[str, bytes]:
    names = os.listxattr(path, follow_symlinks=False)
    return {k: os.getxattr(path, k, follow_symlinks=False) for k in names}


def getfacl(root: Path) -> str:
    return subprocess.run(
        ["getfacl", "-RPn", "."], cwd=root, capture_output=True, text=True, check=True
    ).stdout


def lstat_fields(st: os.stat_result) -> dict:
    fields = {
        "mode": st.st_mode,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "rdev": st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0,
        "mtime": st.st_mtime_ns,
        "atime": st.st_atime_ns,
        "nlink": st.st_nlink,
    }
    if not stat.S_ISDIR(st.st_mode):
        fields["size"] = st.st_size
    return fields


def listdir_noatime(path: Path) -> list[str]:
    """Names in a directory, read without moving its atime (relatime would)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOATIME)
    try:
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


def snapshot(root: Path) -> dict[str, dict]:
    """lstat of every entry below root ("" for root), parents first, each taken before its
    directory is listed; nothing is read that would move an atime (symlinks not followed)."""
    out: dict[str, dict] = {}

    def visit(rel: str) -> None:
        path = root / rel if rel else root
        st = os.lstat(path)
        out[rel] = lstat_fields(st)
        if stat.S_ISDIR(st.st_mode):
            for name in listdir_noatime(path):
                visit(f"{rel}/{name}" if rel else name)

    visit("")
    return out


def walk(root: Path) -> list[str]:
    return list(snapshot(root))


def assert_same_tree(src: Path, dst: Path, src_stats: dict[str, dict] | None = None) -> None:
    """dst is an exact copy of src, whose lstat from before the copy is src_stats."""
    src_stats = src_stats or snapshot(src)
    assert src_stats == snapshot(dst)
    src_ino: dict[int, str] = {}
    dst_ino: dict[int, str] = {}
    for rel in src_stats:
        s, d = src / rel, dst / rel
        assert xattrs(s) == xattrs(d), rel
        mode = src_stats[rel]["mode"]
        if stat.S_ISLNK(mode):
            assert os.readlink(s) == os.readlink(d), rel
        if stat.S_ISREG(mode):
            digest = [hashlib.sha256(p.read_bytes()).digest() for p in (s, d)]
            assert digest[0] == digest[1], rel
            assert data_map(s) == data_map(d), rel
        if not stat.S_ISDIR(mode):
            # Names sharing an inode in the source share one in the copy, and only those.
            first_src = src_ino.setdefault(os.lstat(s).st_ino, rel)
            first_dst = dst_ino.setdefault(os.lstat(d).st_ino, rel)
            assert first_src == first_dst, rel
    assert getfacl(src) == getfacl(dst)


def set_times(root: Path) -> dict[str, tuple[int, int]]:
    """Gives every entry its own nanosecond atime/mtime, children before parents."""
    paths = walk(root)
    for i, rel in enumerate(reversed(paths)):
        t = (T0 + i * 1_000_003 + 1, T0 + i * 1_000_003 + 7)
        os.utime(root / rel, ns=t, follow_symlinks=False)
    # Names of one inode share its times: the last set wins.
    return {
        rel: (os.lstat(root / rel).st_atime_ns, os.lstat(root / rel).st_mtime_ns) for rel in paths
    }


def build_tree(root: Path) -> dict[str, int]:
    """A tree with every kind of entry and metadata; returns the expected CopyStats."""
    root.mkdir()
    write(root / "empty", b"")
    write(root / "small", "hello\n")
    make_sparse(root / "sparse")

    suid = write(root / "bin/suid", os.urandom(5000))
    os.chown(suid, 1234, 5678)  # chown before chmod: it would clear setuid
    os.chmod(suid, 0o6755)
    os.setxattr(suid, "security.capability", CAP_NET_BIND_SERVICE)
    sgid = write(root / "bin/sgid", "g")
    os.chmod(sgid, 0o2711)
    os.chmod(root / "bin", 0o750)

    x = write(root / "xattrs", "x")
    os.setxattr(x, "user.one", b"1")
    os.setxattr(x, "user.empty", b"")
    os.setxattr(x, "trusted.two", b"\x00\x01binary\xff")
    os.setxattr(x, "user.big", os.urandom(3000))

    acl = write(root / "acl", "a")
    subprocess.run(["setfacl", "-m", "u:1234:rwx,g:5678:r-x", str(acl)], check=True)
    (root / "acldir").mkdir()
    subprocess.run(
        ["setfacl", "-m", "u:1234:rwx", "-d", "-m", "u:1234:rwx,g::r-x", str(root / "acldir")],
        check=True,
    )
    write(root / "acldir/inherited", "i")  # gets the default ACL
    write(root / "acldir/plain", "p")
    subprocess.run(["setfacl", "-b", str(root / "acldir/plain")], check=True)  # ... or not
    (root / "acldir/sub").mkdir()

    (root / "sticky").mkdir(mode=0o777)
    os.chmod(root / "sticky", 0o1777)
    (root / "setgid").mkdir()
    os.chown(root / "setgid", 1000, 2000)
    os.chmod(root / "setgid", 0o2775)
    write(root / "setgid/owned", "o")
    os.chown(root / "setgid/owned", 3000, 2000)
    (root / "readonly").mkdir()
    write(root / "readonly/inside", "r")
    os.chmod(root / "readonly/inside", 0o400)
    os.chmod(root / "readonly", 0o555)
    (root / "locked").mkdir(mode=0)

    os.symlink("small", root / "link")
    os.lchown(root / "link", 42, 43)
    os.setxattr(root / "link", "trusted.on_link", b"L", follow_symlinks=False)
    os.symlink("does/not/exist", root / "dangling")
    os.symlink("../" * 40 + "x" * 200, root / "longlink")

    os.mkfifo(root / "fifo", 0o640)
    os.chown(root / "fifo", 7, 8)
    os.mknod(root / "sockfile", 0o600 | stat.S_IFSOCK)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "sock"))
    os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(root / "blk", 0o660 | stat.S_IFBLK, os.makedev(7, 250))
    os.setxattr(root / "null", "trusted.dev", b"d", follow_symlinks=False)

    # Hardlinks across directories, of a file and of a fifo.
    h = write(root / "h/a", os.urandom(10000))
    (root / "h/x/y").mkdir(parents=True)
    os.link(h, root / "h/x/b")
    os.link(h, root / "h/x/y/c")
    os.link(root / "fifo", root / "h/fifo2")

    # Enough small files in several directories for both copy threads to have work.
    for d in range(6):
        for i in range(60):
            write(root / f"many/d{d}/f{i}", os.urandom(i * 37))
    return {
        "files": 12 + 360,
        # root bin acldir acldir/sub sticky setgid readonly locked h h/x h/x/y many many/d0-5
        "dirs": 18,
        "symlinks": 3,
        "specials": 5,
        "hardlinks": 3,
        "bytes": sum(
            os.lstat(p).st_size
            for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and p.name not in ("b", "c")
        ),
        "reflinked": 0,
    }


# ------------------------------------------------------------------------------ copy_tree


@pytest.mark.parametrize("threads", [1, 2])
def test_copy_tree_keeps_everything(tmp_path, threads):
    src, dst = tmp_path / "src", tmp_path / "dst"
    expected = build_tree(src)
    times = set_times(src)
    before = snapshot(src)
    stats = n.copy_tree(str(src), str(dst), threads=threads)
    # The copy moved no atime of the source (but reading a symlink always does).
    after = snapshot(src)
    for rel, fields in before.items():
        if not stat.S_ISLNK(fields["mode"]):
            assert after[rel] == fields, rel
    dst_stats = snapshot(dst)
    for rel, (atime, mtime) in times.items():
        assert (dst_stats[rel]["atime"], dst_stats[rel]["mtime"]) == (atime, mtime), rel
    assert_same_tree(src, dst, before)
    # The details that matter most, spelled out.
    assert os.lstat(dst / "bin/suid").st_mode == stat.S_IFREG | 0o6755
    assert os.getxattr(dst / "bin/suid", "security.capability") == CAP_NET_BIND_SERVICE
    assert os.lstat(dst / "sticky").st_mode == stat.S_IFDIR | 0o1777
    assert os.listxattr(dst / "acldir/plain") == []
    assert "system.posix_acl_access" in os.listxattr(dst / "acldir/inherited")
    assert stat.S_ISSOCK(os.lstat(dst / "sock").st_mode)
    assert os.lstat(dst / "blk").st_rdev == os.makedev(7, 250)
    assert os.lstat(dst / "h/x/y/c").st_ino == os.lstat(dst / "h/a").st_ino
    assert os.lstat(dst / "h/a").st_nlink == 3
    assert os.lstat(dst / "h/fifo2").st_ino == os.lstat(dst / "fifo").st_ino
    assert stats == expected


def test_copy_tree_does_not_cross_mounts(tmp_path):
    src, dst, other = tmp_path / "src", tmp_path / "dst", tmp_path / "other"
    write(src / "keep/file", "k")
    (src / "mnt").mkdir()
    write(other / "secret", "s")
    (other / "deep").mkdir()
    os.chmod(other, 0o711)
    (src / "keep/tmp").mkdir()
    # A bind mount of the same filesystem (same st_dev) and another filesystem.
    subprocess.run(["mount", "--bind", str(other), str(src / "mnt")], check=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "none", str(src / "keep/tmp")], check=True
        )
        try:
            write(src / "keep/tmp/on_tmpfs", "t")
            mounted = os.lstat(src / "mnt")
            stats = n.copy_tree(str(src), str(dst))
        finally:
            subprocess.run(["umount", str(src / "keep/tmp")], check=True)
    finally:
        subprocess.run(["umount", str(src / "mnt")], check=True)
    assert os.listdir(dst / "mnt") == []
    assert os.listdir(dst / "keep/tmp") == []
    assert (dst / "keep/file").read_text() == "k"
    # The mount-point directory is copied as seen, the mounted root's metadata.
    assert os.lstat(dst / "mnt").st_mode == mounted.st_mode == stat.S_IFDIR | 0o711
    assert stats["files"] == 1 and stats["dirs"] == 4


def test_copy_tree_into_itself(tmp_path):
    src = tmp_path / "src"
    write(src / "a/f", "f")
    write(src / "z", "z")
    stats = n.copy_tree(str(src), str(src / "a/copy"))
    # The copy is the tree as it was: it does not contain itself.
    assert sorted(walk(src / "a/copy")) == ["", "a", "a/f", "z"]
    assert (stats["files"], stats["dirs"]) == (2, 2)


def test_copy_tree_errors(tmp_path):
    src = tmp_path / "src"
    write(src / "f", "f")
    with pytest.raises(FileNotFoundError) as e:
        n.copy_tree(str(tmp_path / "missing"), str(tmp_path / "d1"))
    assert e.value.filename == str(tmp_path / "missing")
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError) as e:
        n.copy_tree(str(src), str(tmp_path / "exists"))
    assert e.value.filename == str(tmp_path / "exists")
    with pytest.raises(NotADirectoryError) as e:
        n.copy_tree(str(src / "f"), str(tmp_path / "d2"))
    assert e.value.filename == str(src / "f")
    assert not (tmp_path / "d1").exists() and not (tmp_path / "d2").exists()


def test_copy_tree_error_names_the_entry(tmp_path):
    src = tmp_path / "src"
    for i in range(10):
        write(src / f"a/b/f{i}", "f")
    small = tmp_path / "small"
    small.mkdir()
    # A filesystem with room for only a few inodes: the copy fails part way down.
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=6", "none", str(small)], check=True
    )
    try:
        with pytest.raises(OSError) as e:
            n.copy_tree(str(src), str(small / "dst"), threads=1)
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert e.value.errno == errno.ENOSPC
    assert e.value.filename.startswith(str(small / "dst/a/b/f")), e.value.filename


# ----------------------------------------------------------------------------- copy_entry


def test_regular_files(tmp_path):
    for name, data in [("empty", b""), ("small", b"abc"), ("multi", os.urandom(5 << 20))]:
        src = write(tmp_path / name, data)
        os.utime(src, ns=(T0 + 1, T0 + 2))
        method = n.copy_entry(str(src), str(tmp_path / f"{name}.copy"))
        assert method == ("none" if not data else "copy_file_range")
        st = os.lstat(tmp_path / f"{name}.copy")  # before reading moves the atime
        assert (st.st_atime_ns, st.st_mtime_ns) == (T0 + 1, T0 + 2)
        assert (tmp_path / f"{name}.copy").read_bytes() == data


def test_holes_are_kept(tmp_path):
    src = make_sparse(tmp_path / "sparse")
    assert n.copy_entry(str(src), str(tmp_path / "copy")) == "copy_file_range"
    expected = [(0, 64 << 10), (3 << 20, (3 << 20) + (64 << 10))]
    assert data_map(tmp_path / "copy") == data_map(src) == expected
    assert os.lstat(tmp_path / "copy").st_blocks == os.lstat(src).st_blocks
    assert os.lstat(tmp_path / "copy").st_size == 8 << 20
    assert (tmp_path / "copy").read_bytes() == src.read_bytes()


def test_all_hole_file(tmp_path):
    src = tmp_path / "hole"
    with open(src, "wb") as f:
        f.truncate(1 << 20)
    n.copy_entry(str(src), str(tmp_path / "copy"))
    assert data_map(tmp_path / "copy") == []
    assert os.lstat(tmp_path / "copy").st_size == 1 << 20


def test_setuid_owner_and_capability(tmp_path):
    src = write(tmp_path / "ping", os.urandom(1000))
    os.chown(src, 1234, 5678)
    os.chmod(src, 0o4750)
    os.setxattr(src, "security.capability", CAP_NET_BIND_SERVICE)
    n.copy_entry(str(src), str(tmp_path / "copy"))
    st = os.lstat(tmp_path / "copy")
    assert (st.st_mode, st.st_uid, st.st_gid) == (stat.S_IFREG | 0o4750, 1234, 5678)
    assert os.getxattr(tmp_path / "copy", "security.capability") == CAP_NET_BIND_SERVICE


def test_directory_without_contents(tmp_path):
    src = tmp_path / "dir"
    write(src / "child", "c")
    os.chown(src, 11, 22)
    os.chmod(src, 0o3775)
    os.setxattr(src, "user.d", b"dir")
    subprocess.run(["setfacl", "-d", "-m", "u:99:rx", str(src)], check=True)
    os.utime(src, ns=(T0 + 5, T0 + 6))
    before = lstat_fields(os.lstat(src))
    assert n.copy_entry(str(src), str(tmp_path / "copy")) == "none"
    assert lstat_fields(os.lstat(src)) == before  # not even its atime moved
    assert lstat_fields(os.lstat(tmp_path / "copy")) == before | {"nlink": 2}
    assert os.listdir(tmp_path / "copy") == []
    assert xattrs(tmp_path / "copy") == xattrs(src)


def test_symlink_with_xattr_owner_and_times(tmp_path):
    link = tmp_path / "link"
    os.symlink("some/target", link)
    os.lchown(link, 5, 6)
    os.setxattr(link, "trusted.l", b"v", follow_symlinks=False)
    os.utime(link, ns=(T0 + 10, T0 + 20), follow_symlinks=False)
    before = lstat_fields(os.lstat(link))  # reading the link moves its atime
    assert n.copy_entry(str(link), str(tmp_path / "copy")) == "none"
    assert lstat_fields(os.lstat(tmp_path / "copy")) == before
    assert os.readlink(tmp_path / "copy") == "some/target"
    assert xattrs(tmp_path / "copy") == {"trusted.l": b"v"}


@pytest.mark.parametrize("kind", ["fifo", "socket", "chr", "blk"])
def test_special_files(tmp_path, kind):
    src = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(src, 0o620)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(src))
        os.chmod(src, 0o751)
    else:
        fmt = stat.S_IFCHR if kind == "chr" else stat.S_IFBLK
        os.mknod(src, 0o640 | fmt, os.makedev(8, 17))
    os.chown(src, 100, 200)
    os.setxattr(src, "trusted.k", kind.encode(), follow_symlinks=False)
    os.utime(src, ns=(T0 + 3, T0 + 4))
    assert n.copy_entry(str(src), str(tmp_path / "copy")) == "none"
    assert lstat_fields(os.lstat(tmp_path / "copy")) == lstat_fields(os.lstat(src))
    assert xattrs(tmp_path / "copy") == {"trusted.k": kind.encode()}


def test_acls(tmp_path):
    src = write(tmp_path / "src/f", "f")
    subprocess.run(["setfacl", "-m", "u:1234:rw,g:5678:r,m::rw", str(src)], check=True)
    (tmp_path / "dst").mkdir()
    n.copy_entry(str(src), str(tmp_path / "dst/f"))
    assert getfacl(tmp_path / "src") == getfacl(tmp_path / "dst")


def test_inherited_default_acl_is_not_added(tmp_path):
    src = write(tmp_path / "plain", "p")
    os.chmod(src, 0o640)
    (tmp_path / "src_dir").mkdir(mode=0o750)
    dst_parent = tmp_path / "dst"
    dst_parent.mkdir()
    subprocess.run(["setfacl", "-d", "-m", "u:1234:rwx,o::rwx", str(dst_parent)], check=True)
    n.copy_entry(str(src), str(dst_parent / "plain"))
    n.copy_entry(str(tmp_path / "src_dir"), str(dst_parent / "dir"))
    n.copy_tree(str(tmp_path / "src_dir"), str(dst_parent / "tree"))
    for name, mode in [("plain", 0o100640), ("dir", 0o40750), ("tree", 0o40750)]:
        assert os.listxattr(dst_parent / name) == [], name
        assert os.lstat(dst_parent / name).st_mode == mode, name


def test_setgid_destination_parent_passes_nothing_on(tmp_path):
    src = tmp_path / "src"
    write(src / "sub/f", "f")
    os.chmod(src, 0o755)
    os.chown(src, 0, 777)  # a group the files inside do not have
    dst_parent = tmp_path / "dst"
    dst_parent.mkdir()
    os.chown(dst_parent, 0, 4242)
    os.chmod(dst_parent, 0o2777)
    n.copy_tree(str(src), str(dst_parent / "tree"))
    n.copy_entry(str(src / "sub/f"), str(dst_parent / "f"))
    for copy, orig in [("tree", ""), ("tree/sub", "sub"), ("tree/sub/f", "sub/f"), ("f", "sub/f")]:
        st, want = os.lstat(dst_parent / copy), os.lstat(src / orig)
        assert (st.st_gid, st.st_mode) == (want.st_gid, want.st_mode), copy


def test_entry_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        n.copy_entry(str(tmp_path / "missing"), str(tmp_path / "x"))
    assert e.value.filename == str(tmp_path / "missing")
    src = write(tmp_path / "f", "f")
    (tmp_path / "d").mkdir()
    os.symlink("f", tmp_path / "l")
    os.mkfifo(tmp_path / "p")
    for s in ["f", "d", "l", "p"]:
        for existing in ["f", "d", "l"]:
            with pytest.raises(FileExistsError) as e:
                n.copy_entry(str(tmp_path / s), str(tmp_path / existing))
            assert e.value.filename == str(tmp_path / existing)
    with pytest.raises(FileNotFoundError) as e:
        n.copy_entry(str(src), str(tmp_path / "no/such/dir"))
    assert e.value.filename == str(tmp_path / "no/such/dir")
    # A dangling symlink at the destination is not followed either.
    os.symlink("nowhere", tmp_path / "dangling")
    with pytest.raises(FileExistsError):
        n.copy_entry(str(src), str(tmp_path / "dangling"))
    assert not (tmp_path / "nowhere").exists()


def test_pathlike_and_bytes(tmp_path):
    src = write(tmp_path / "f\udcff", "odd name")
    assert n.copy_entry(src, tmp_path / "copy") == "copy_file_range"
    assert n.copy_entry(os.fsencode(src), os.fsencode(tmp_path / "copy2")) == "copy_file_range"
    assert (tmp_path / "copy").read_text() == "odd name"


def test_read_write_fallback_across_filesystems(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "none", str(mnt)], check=True)
    try:
        src = make_sparse(mnt / "sparse")
        data = write(mnt / "data", os.urandom(3 << 20))
        # tmpfs has no copy_file_range of its own and the kernel does not splice across
        # filesystems: the data goes by read/write, holes still kept.
        assert n.copy_entry(str(src), str(tmp_path / "sparse")) == "readwrite"
        assert n.copy_entry(str(data), str(tmp_path / "data")) == "readwrite"
        assert data_map(tmp_path / "sparse") == data_map(src)
        assert (tmp_path / "sparse").read_bytes() == src.read_bytes()
        assert (tmp_path / "data").read_bytes() == data.read_bytes()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# -------------------------------------------------------------------------------- reflink


@pytest.mark.parametrize("fixture", ["xfs_dir", "btrfs_dir"])
def test_reflink_shares_extents(request, fixture):
    root: Path = request.getfixturevalue(fixture)
    src = write(root / "src", os.urandom(8 << 20))
    os.sync()
    assert n.copy_entry(str(src), str(root / "clone")) == "reflink"
    ext_src, ext_dst = fiemap(src), fiemap(root / "clone")
    assert ext_dst and all(flags & FIEMAP_EXTENT_SHARED for *_, flags in ext_dst)
    assert [e[:3] for e in ext_src] == [e[:3] for e in ext_dst]  # the very same blocks
    assert (root / "clone").read_bytes() == src.read_bytes()

    # Without reflink the data is really copied: nothing shared with the source (and so no
    # copy_file_range, which clones on these filesystems).
    assert n.copy_entry(str(src), str(root / "copy"), reflink=False) == "readwrite"
    assert not any(flags & FIEMAP_EXTENT_SHARED for *_, flags in fiemap(root / "copy"))
    assert (root / "copy").read_bytes() == src.read_bytes()

    write(root / "tree/a", os.urandom(100_000))
    make_sparse(root / "tree/sparse")
    write(root / "tree/empty", b"")
    stats = n.copy_tree(str(root / "tree"), str(root / "tree2"))
    assert (stats["files"], stats["reflinked"]) == (3, 2)
    assert data_map(root / "tree2/sparse") == data_map(root / "tree/sparse")
    assert all(flags & FIEMAP_EXTENT_SHARED for *_, flags in fiemap(root / "tree2/a"))


def test_ext4_falls_back_to_copy_file_range(ext4_dir):
    src = write(ext4_dir / "src", os.urandom(4 << 20))
    assert n.copy_entry(str(src), str(ext4_dir / "copy")) == "copy_file_range"
    assert (ext4_dir / "copy").read_bytes() == src.read_bytes()
    assert not any(flags & FIEMAP_EXTENT_SHARED for *_, flags in fiemap(ext4_dir / "copy"))
    assert n.copy_entry(str(src), str(ext4_dir / "copy2"), reflink=False) == "copy_file_range"
    write(ext4_dir / "tree/a", os.urandom(10_000))
    make_sparse(ext4_dir / "tree/sparse")
    stats = n.copy_tree(str(ext4_dir / "tree"), str(ext4_dir / "tree2"))
    assert (stats["files"], stats["reflinked"]) == (2, 0)
    assert data_map(ext4_dir / "tree2/sparse") == data_map(ext4_dir / "tree/sparse")
    assert (ext4_dir / "tree2/a").read_bytes() == (ext4_dir / "tree/a").read_bytes()
