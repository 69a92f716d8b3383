"""apply_tar / export_tar (storagekit._native, csrc/archive) against real trees, GNU tar as the
reference extractor, Python's tarfile as an independent reader and writer, and hashlib for
diff IDs."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from storagekit import _native as n

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod, xattrs)")

HAVE_GNU_TAR = shutil.which("tar") is not None and b"GNU tar" in subprocess.run(
    ["tar", "--version"], capture_output=True
).stdout
HAVE_ZSTD = shutil.which("zstd") is not None

NS = 123456789  # a sub-second part for mtimes


# --------------------------------------------------------------------------- helpers


def snapshot(root: Path, *, skip_xattr_prefixes=("trusted.overlay.", "user.overlay.")) -> dict:
    """Everything tar should preserve about the tree under root, keyed by relative path
    (bytes, so that non-UTF-8 names compare exactly). Hardlinks show up as a group id."""
    out: dict[bytes, dict] = {}
    inode_group: dict[tuple[int, int], bytes] = {}
    rootb = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(rootb):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, rootb)
            st = os.lstat(p)
            rec = {
                "type": stat.S_IFMT(st.st_mode),
                "mode": stat.S_IMODE(st.st_mode),
                "uid": st.st_uid,
                "gid": st.st_gid,
                "mtime_ns": st.st_mtime_ns,
            }
            xattrs = {}
            for x in os.listxattr(p, follow_symlinks=False):
                if not x.startswith(skip_xattr_prefixes):
                    xattrs[x] = os.getxattr(p, x, follow_symlinks=False)
            rec["xattrs"] = xattrs
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    rec["sha"] = hashlib.sha256(f.read()).hexdigest()
                rec["size"] = st.st_size
                if st.st_nlink > 1:
                    rec["link_group"] = inode_group.setdefault((st.st_dev, st.st_ino), rel)
            elif stat.S_ISLNK(st.st_mode):
                rec["target"] = os.readlink(p)
                del rec["mode"]
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                rec["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            out[rel] = rec
    return out


def export(root: Path, out: Path, **kw) -> dict:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        return n.export_tar(str(root), fd, **kw)
    finally:
        os.close(fd)


def apply(tar: Path, root: Path, **kw) -> dict:
    root.mkdir(exist_ok=True)
    fd = os.open(tar, os.O_RDONLY)
    try:
        return n.apply_tar(fd, str(root), **kw)
    finally:
        os.close(fd)


def apply_bytes(data: bytes, root: Path, **kw) -> dict:
    """Apply from a pipe, fed by a thread: also proves the GIL is released while reading."""
    root.mkdir(exist_ok=True)
    r, w = os.pipe()

    def feed():
        try:
            with os.fdopen(w, "wb") as f:
                f.write(data)
        except BrokenPipeError:
            pass

    t = threading.Thread(target=feed)
    t.start()
    try:
        return n.apply_tar(r, str(root), **kw)
    finally:
        os.close(r)
        t.join()


def decompress(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
    return data


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def set_times(p: Path, sec: int, follow: bool = False):
    os.utime(p, ns=(sec * 10**9 + NS, sec * 10**9 + NS), follow_symlinks=follow)


def make_rich_tree(root: Path) -> None:
    """A tree using every feature an OCI layer can carry."""
    root.mkdir()
    (root / "etc").mkdir()
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (root / "bin").mkdir()
    su = root / "bin" / "su"
    su.write_bytes(b"\x7fELF" + bytes(range(256)) * 40)
    os.chown(su, 0, 0)
    os.chmod(su, 0o4755)
    ping = root / "bin" / "ping"
    ping.write_bytes(b"ping")
    os.chmod(ping, 0o755)
    # security.capability: cap_net_raw+ep (v2 format); restored after chown.
    os.setxattr(ping, "security.capability",
                bytes.fromhex("01000002" "00200000" "00000000" "00000000" "00000000"))
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    (root / "home" / "user").mkdir(parents=True)
    (root / "home" / "user" / "notes").write_text("secret\n")
    os.chown(root / "home" / "user" / "notes", 1000, 2000)
    os.chown(root / "home" / "user", 1000, 1000)
    os.chmod(root / "home" / "user", 0o700)
    (root / "data").mkdir()
    big = root / "data" / "big.bin"
    big.write_bytes(os.urandom(3 << 20) + b"tail")
    os.setxattr(big, "user.origin", b"test")
    os.setxattr(big, "trusted.sk", b"\x00\x01binary\xff")
    (root / "data" / "empty").write_bytes(b"")
    os.chmod(root / "data" / "empty", 0o600)
    # Hardlinks: three names, one inode.
    (root / "data" / "a").write_text("shared")
    os.link(root / "data" / "a", root / "data" / "b")
    os.link(root / "data" / "a", root / "etc" / "c")
    # Symlinks: relative, absolute, dangling, to a directory.
    os.symlink("hosts", root / "etc" / "hosts.link")
    os.symlink("/etc/passwd", root / "etc" / "abs.link")
    os.symlink("does/not/exist", root / "dangling")
    os.symlink("../data", root / "etc" / "data.link")
    # Specials.
    os.mkfifo(root / "fifo", 0o640)
    os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "loop9", stat.S_IFBLK | 0o660, os.makedev(7, 9))
    # Names: long, deep, unicode, not UTF-8.
    (root / ("L" * 200)).write_text("long name")
    deep = root.joinpath(*[f"level{i:02d}" for i in range(30)])
    deep.mkdir(parents=True)
    (deep / "leaf").write_text("deep")
    (root / "ünïcødé ✓").write_text("u")
    with open(os.path.join(os.fsencode(root), b"latin1-\xe9\xff"), "wb") as f:
        f.write(b"bytes name")
    # Sparse file: holes read back as zeros.
    with open(root / "data" / "sparse", "wb") as f:
        f.truncate(1 << 20)
        f.seek(512 << 10)
        f.write(b"middle")
    # Nanosecond mtimes everywhere (directories last, deepest first).
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            set_times(Path(dirpath) / name, 1_600_000_000)
    set_times(root, 1_600_000_000)


@pytest.fixture(scope="module")
def rich(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rich") / "tree"
    make_rich_tree(root)
    return root


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_round_trip(rich, tmp_path, compression):
    out = tmp_path / "layer.tar"
    res = export(rich, out, compression=compression)
    assert res["bytes"] == out.stat().st_size
    raw = decompress(out)
    assert res["diff_id"] == sha(raw)

    dst = tmp_path / "applied"
    ares = apply(out, dst)
    assert ares["diff_id"] == res["diff_id"]
    assert ares["compression"] == compression
    assert ares["entries"] == res["entries"]
    assert snapshot(dst) == snapshot(rich)
    st = os.lstat(dst / "bin" / "su")
    assert st.st_mode & stat.S_ISUID
    # Hardlinks are links again, not copies.
    assert os.stat(dst / "data" / "a").st_ino == os.stat(dst / "etc" / "c").st_ino
    assert os.stat(dst / "data" / "a").st_nlink == 3

    # Exporting the applied tree gives the very same stream: the format is deterministic.
    again = tmp_path / "again.tar"
    assert export(dst, again)["diff_id"] == res["diff_id"]


def test_export_format(rich, tmp_path):
    out = tmp_path / "layer.tar"
    res = export(rich, out)
    with tarfile.open(out) as t:
        members = t.getmembers()
        names = [m.name for m in members]
        assert res["entries"] == len(members)
        assert all(not nm.startswith(("./", "/")) for nm in names)
        assert "" not in names and "." not in names  # the root is not an entry
        by_name = {m.name: m for m in members}
        assert by_name["bin/su"].mode == 0o4755
        assert by_name["home/user/notes"].uid == 1000 and by_name["home/user/notes"].gid == 2000
        assert by_name["home/user/notes"].uname == "" and by_name["home/user/notes"].gname == ""
        assert by_name["data/big.bin"].pax_headers["SCHILY.xattr.user.origin"] == "test"
        mtime = float(by_name["etc/hosts"].pax_headers["mtime"])
        assert mtime == pytest.approx(1_600_000_000.123456789)
        links = [m for m in members if m.islnk()]
        assert sorted((m.name, m.linkname) for m in links) == [
            ("data/b", "data/a"), ("etc/c", "data/a")]
        loop9 = by_name["loop9"]
        assert loop9.isblk() and (loop9.devmajor, loop9.devminor) == (7, 9)
    # Directories carry a trailing "/", contents follow their directory, names are sorted.
    raw_names = []
    with tarfile.open(out) as t:
        for m in t:
            raw_names.append(m.name + ("/" if m.isdir() else ""))
    data = out.read_bytes()
    assert b"data/\x00" in data  # ustar name field of a directory
    for i, nm in enumerate(raw_names):
        parent = os.path.dirname(nm.rstrip("/"))
        if parent:
            assert parent + "/" in raw_names[:i], f"{nm} before its directory"
    siblings: dict[str, list[str]] = {}
    for nm in raw_names:
        bare = nm.rstrip("/")
        siblings.setdefault(os.path.dirname(bare), []).append(os.path.basename(bare))
    for names in siblings.values():
        assert names == sorted(names, key=os.fsencode)


def test_tarfile_reads_export(rich, tmp_path):
    out = tmp_path / "layer.tar"
    export(rich, out)
    with tarfile.open(out) as t:
        t.extractall(tmp_path / "py", filter="fully_trusted") if hasattr(tarfile, "data_filter") \
            else t.extractall(tmp_path / "py")
    f = tmp_path / "py" / "data" / "big.bin"
    assert f.read_bytes() == (rich / "data" / "big.bin").read_bytes()


# --------------------------------------------------------------------------- GNU tar and tarfile


def gnu_create(src: Path, out: Path, *extra: str) -> None:
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", *extra, "-cf", str(out),
                    "-C", str(src), "."], check=True, capture_output=True)


def gnu_extract(tar: Path, dst: Path) -> None:
    dst.mkdir()
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--same-owner", "-xpf", str(tar),
                    "-C", str(dst)], check=True, capture_output=True)


@pytest.mark.skipif(not HAVE_GNU_TAR, reason="GNU tar is not installed")
@pytest.mark.parametrize("compression,flag", [("none", None), ("gzip", "-z"), ("zstd", "--zstd")])
def test_apply_gnu_tar(rich, tmp_path, compression, flag):
    if compression == "zstd" and not HAVE_ZSTD:
        pytest.skip("zstd is not installed")
    tar = tmp_path / "gnu.tar"
    gnu_create(rich, tar, *([flag] if flag else []))
    mine, ref = tmp_path / "mine", tmp_path / "ref"
    res = apply(tar, mine)
    gnu_extract(tar, ref)
    assert res["compression"] == compression
    assert res["diff_id"] == sha(decompress(tar))
    ours, theirs = snapshot(mine), snapshot(ref)
    assert ours == theirs
    assert ours == snapshot(rich)  # GNU tar's POSIX format keeps everything too


@pytest.mark.skipif(not HAVE_GNU_TAR, reason="GNU tar is not installed")
def test_apply_gnu_format_tar(rich, tmp_path):
    # GNU's own format: seconds-only mtimes, ././@LongLink names, no xattrs.
    tar = tmp_path / "gnu-format.tar"
    subprocess.run(["tar", "--format=gnu", "-cf", str(tar), "-C", str(rich), "."],
                   check=True, capture_output=True)
    mine, ref = tmp_path / "mine", tmp_path / "ref"
    apply(tar, mine)
    ref.mkdir()
    subprocess.run(["tar", "--same-owner", "-xpf", str(tar), "-C", str(ref)], check=True)
    assert snapshot(mine) == snapshot(ref)


def python_tar(entries, fmt, compress=False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if compress else "w", format=fmt) as t:
        for info, data in entries:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def ti(name, type_=tarfile.REGTYPE, data=b"", **kw):
    info = tarfile.TarInfo(name)
    info.type = type_
    info.size = len(data) if type_ == tarfile.REGTYPE else 0
    info.mtime = kw.pop("mtime", 1_500_000_000)
    for k, v in kw.items():
        setattr(info, k, v)
    return info, (data if type_ == tarfile.REGTYPE else None)


@pytest.mark.skipif(not HAVE_GNU_TAR, reason="GNU tar is not installed")
@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
@pytest.mark.parametrize("compress", [False, True])
def test_apply_python_tarfile(tmp_path, fmt, compress):
    long_dir = "d" * 90 + "/" + "e" * 90
    entries = [
        ti("dir/", tarfile.DIRTYPE, mode=0o750, uid=5, gid=6),
        ti("dir/file", data=b"hello\n", mode=0o640, uid=7, gid=8),
        ti("dir/exe", data=b"#!/bin/sh\n", mode=0o755),
        ti("dir/link", tarfile.SYMTYPE, linkname="file"),
        ti("dir/hard", tarfile.LNKTYPE, linkname="dir/file"),
        ti("fifo", tarfile.FIFOTYPE, mode=0o600),
        ti("chr", tarfile.CHRTYPE, devmajor=1, devminor=5, mode=0o644),
        ti(long_dir + "/", tarfile.DIRTYPE, mode=0o755),
        ti(long_dir + "/f", data=b"x" * 5000),
        ti("./dotted/./name", data=b"normalised"),
    ]
    if fmt != tarfile.USTAR_FORMAT:
        entries.append(ti("n" * 150, data=b"long"))
    if fmt == tarfile.PAX_FORMAT:
        info, data = ti("xattrs", data=b"x")
        info.pax_headers = {"SCHILY.xattr.user.color": "blue", "mtime": "1500000000.25"}
        entries.append((info, data))
    data = python_tar(entries, fmt, compress)
    tar = tmp_path / "py.tar"
    tar.write_bytes(data)
    mine, ref = tmp_path / "mine", tmp_path / "ref"
    res = apply(tar, mine)
    gnu_extract(tar, ref)
    # Parents missing from the stream are made at extraction time, by both tools.
    implicit = {b"d" * 90, b"dotted"}
    ours, theirs = snapshot(mine), snapshot(ref)
    for snap in (ours, theirs):
        for p in implicit:
            del snap[p]["mtime_ns"]
    assert ours == theirs
    assert res["diff_id"] == sha(gzip.decompress(data) if compress else data)
    assert res["entries"] == len(entries)
    assert res["compression"] == ("gzip" if compress else "none")
    assert (mine / "dotted" / "name").read_bytes() == b"normalised"
    if fmt == tarfile.PAX_FORMAT:
        assert os.getxattr(mine / "xattrs", "user.color") == b"blue"
        assert os.stat(mine / "xattrs").st_mtime_ns == 1_500_000_000_250_000_000


def test_apply_from_pipe_and_trailing_bytes(tmp_path):
    # The diff ID covers the whole stream, bytes after the end-of-archive blocks included.
    data = python_tar([ti("a", data=b"A")], tarfile.PAX_FORMAT) + b"\0" * 4096 + b"trailer"
    res = apply_bytes(data, tmp_path / "root")
    assert res["diff_id"] == sha(data)
    assert res["entries"] == 1 and res["size"] == 1
    assert (tmp_path / "root" / "a").read_bytes() == b"A"


def test_apply_big_stream_through_pipe(tmp_path):
    payload = os.urandom(5 << 20)
    data = python_tar([ti("big", data=payload), ti("small", data=b"s")], tarfile.PAX_FORMAT)
    res = apply_bytes(gzip.compress(data, 1), tmp_path / "root")
    assert res["diff_id"] == sha(data)
    assert res["size"] == len(payload) + 1
    assert (tmp_path / "root" / "big").read_bytes() == payload


@pytest.mark.parametrize("compress", [False, True])
def test_apply_from_nonblocking_pipe(tmp_path, compress):
    payload = os.urandom(300_000)
    data = python_tar([ti("f", data=payload)], tarfile.PAX_FORMAT)
    stream = gzip.compress(data) if compress else data
    r, w = os.pipe()
    os.set_blocking(r, False)

    def feed():  # dribble the stream so that reads find the pipe empty
        with os.fdopen(w, "wb") as f:
            for i in range(0, len(stream), 4096):
                f.write(stream[i:i + 4096])
                f.flush()

    t = threading.Thread(target=feed)
    t.start()
    try:
        res = n.apply_tar(r, str(tmp_path))
    finally:
        os.close(r)
        t.join()
    assert res["diff_id"] == sha(data)
    assert (tmp_path / "f").read_bytes() == payload


@pytest.mark.parametrize("tool", ["xz", "bzip2"])
def test_apply_other_compressions(tmp_path, tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    data = python_tar([ti("f", data=b"content")], tarfile.PAX_FORMAT)
    comp = subprocess.run([tool, "-c"], input=data, capture_output=True, check=True).stdout
    res = apply_bytes(comp, tmp_path / "root")
    assert res["compression"] == tool
    assert res["diff_id"] == sha(data)


# --------------------------------------------------------------------------- apply semantics


def test_replacement_rules(tmp_path):
    root = tmp_path / "root"
    (root / "dir" / "old").mkdir(parents=True)
    (root / "dir" / "old" / "f").write_text("old")
    (root / "file").write_text("old file")
    (root / "todir").write_text("will become a dir")
    (root / "merge").mkdir()
    (root / "merge" / "kept").write_text("kept")
    data = python_tar([
        ti("dir", data=b"now a file"),            # non-directory over a directory tree
        ti("file", tarfile.SYMTYPE, linkname="dir"),  # over a non-directory
        ti("todir/", tarfile.DIRTYPE, mode=0o711),     # directory over a non-directory
        ti("merge/", tarfile.DIRTYPE, mode=0o700, uid=3, gid=4),  # directory over directory
        ti("merge/new", data=b"new"),
    ], tarfile.PAX_FORMAT)
    apply_bytes(data, root)
    assert (root / "dir").read_bytes() == b"now a file"
    assert os.readlink(root / "file") == "dir"
    assert stat.S_IMODE(os.lstat(root / "todir").st_mode) == 0o711
    assert sorted(os.listdir(root / "merge")) == ["kept", "new"]
    st = os.lstat(root / "merge")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, 3, 4)
    assert st.st_mtime == 1_500_000_000  # restored after "merge/new" was written into it


def test_duplicate_entries_later_wins(tmp_path):
    data = python_tar([ti("f", data=b"first"), ti("f", data=b"second", mode=0o600),
                       ti("d/", tarfile.DIRTYPE, mode=0o755),
                       ti("d/", tarfile.DIRTYPE, mode=0o700)],
                      tarfile.PAX_FORMAT)
    apply_bytes(data, tmp_path / "root")
    assert (tmp_path / "root" / "f").read_bytes() == b"second"
    assert stat.S_IMODE(os.stat(tmp_path / "root" / "f").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "root" / "d").st_mode) == 0o700


def test_missing_parents_are_created(tmp_path):
    data = python_tar([ti("a/b/c/file", data=b"x")], tarfile.PAX_FORMAT)
    apply_bytes(data, tmp_path / "root")
    assert (tmp_path / "root" / "a" / "b" / "c" / "file").read_bytes() == b"x"
    assert stat.S_IMODE(os.stat(tmp_path / "root" / "a").st_mode) == 0o755


def test_same_owner_false(tmp_path):
    info, d = ti("suid", data=b"x", mode=0o4755, uid=1234, gid=5678)
    dinfo, _ = ti("dir/", tarfile.DIRTYPE, mode=0o2775, uid=1234, gid=5678)
    data = python_tar([(info, d), (dinfo, None)], tarfile.PAX_FORMAT)
    apply_bytes(data, tmp_path / "root", same_owner=False)
    st = os.stat(tmp_path / "root" / "suid")
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    assert stat.S_IMODE(st.st_mode) == 0o755  # no setuid for the caller's own files
    dst = os.stat(tmp_path / "root" / "dir")
    assert dst.st_uid == os.geteuid()
    assert stat.S_IMODE(dst.st_mode) == 0o2775


def test_root_entry_is_skipped(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.chmod(root, 0o755)
    data = python_tar([ti("./", tarfile.DIRTYPE, mode=0o700), ti("f", data=b"1")],
                      tarfile.PAX_FORMAT)
    apply_bytes(data, root)
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o755


def test_acl_from_gnu_acls(tmp_path):
    if shutil.which("setfacl") is None or not HAVE_GNU_TAR:
        pytest.skip("setfacl or GNU tar missing")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    subprocess.run(["setfacl", "-m", "u:1234:rw", str(src / "f")], check=True)
    (src / "d").mkdir()
    subprocess.run(["setfacl", "-m", "u:77:rwx", str(src / "d")], check=True)
    subprocess.run(["setfacl", "-d", "-m", "g:99:rx", str(src / "d")], check=True)
    tar = tmp_path / "acl.tar"
    # --acls stores SCHILY.acl.* text, not the xattr: converted back to the xattr on apply.
    subprocess.run(["tar", "--acls", "-cf", str(tar), "-C", str(src), "."], check=True)
    dst = tmp_path / "dst"
    apply(tar, dst)
    def getfacl(p):
        return subprocess.run(["getfacl", "-cn", str(p)], capture_output=True, text=True,
                              check=True).stdout

    assert getfacl(dst / "f") == getfacl(src / "f")
    assert getfacl(dst / "d") == getfacl(src / "d")
    assert "default:group:99:r-x" in getfacl(dst / "d")


# --------------------------------------------------------------------------- whiteouts on apply


def lower_tree(root: Path) -> None:
    (root / "etc" / "old.d").mkdir(parents=True)
    (root / "etc" / "old.d" / "x.conf").write_text("x")
    (root / "etc" / "motd").write_text("hello")
    (root / "var" / "cache").mkdir(parents=True)
    (root / "var" / "cache" / "lower1").write_text("1")
    (root / "var" / "cache" / "sub").mkdir()
    (root / "var" / "cache" / "sub" / "lower2").write_text("2")
    (root / "opq").mkdir()
    (root / "opq" / "lower").write_text("l")
    (root / "opq" / "keepdir").mkdir()
    (root / "opq" / "keepdir" / "lower").write_text("l")


WHITEOUT_STREAM = [
    ti(".wh.motd-missing"),                     # whiteout of something absent: fine
    ti("etc/.wh.motd"),
    ti("etc/.wh.old.d"),
    ti("var/cache/new-before", data=b"b"),      # sibling before the opaque marker
    ti("var/cache/.wh..wh..opq"),
    ti("var/cache/new-after", data=b"a"),       # and after it
    ti("opq/keepdir/", tarfile.DIRTYPE),         # this layer re-adds opq/keepdir ...
    ti("opq/keepdir/mine", data=b"m"),          # ... with one file of its own
    ti("opq/.wh..wh..opq"),
    ti(".wh..wh.plnk/", tarfile.DIRTYPE),        # aufs bookkeeping: skipped with contents
    ti(".wh..wh.plnk/123.456", data=b"p"),
    ti(".wh..wh.aufs"),
    ti("gone/", tarfile.DIRTYPE),               # deleted and re-created in the same layer
    ti(".wh.gone"),
    ti("gone/new", data=b"n"),
]


def test_apply_whiteouts_none(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    lower_tree(root)
    (root / "gone").mkdir()
    (root / "gone" / "lower").write_text("l")
    res = apply_bytes(python_tar(WHITEOUT_STREAM, tarfile.PAX_FORMAT), root, dialect="none")
    assert res["entries"] == len(WHITEOUT_STREAM)
    assert sorted(os.listdir(root)) == ["etc", "gone", "opq", "var"]
    assert os.listdir(root / "etc") == []
    assert sorted(os.listdir(root / "var" / "cache")) == ["new-after", "new-before"]
    assert os.listdir(root / "opq") == ["keepdir"]
    assert os.listdir(root / "opq" / "keepdir") == ["mine"]
    assert os.listdir(root / "gone") == ["new"]


def test_apply_whiteouts_oci(tmp_path):
    root = tmp_path / "root"
    apply_bytes(python_tar(WHITEOUT_STREAM, tarfile.PAX_FORMAT), root, dialect="oci")
    for p in ("etc/.wh.motd", "etc/.wh.old.d", "var/cache/.wh..wh..opq", "opq/.wh..wh..opq",
              ".wh.gone", ".wh.motd-missing"):
        st = os.lstat(root / p)
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0, p
    assert not (root / ".wh..wh.plnk").exists() and not (root / ".wh..wh.aufs").exists()
    assert sorted(os.listdir(root / "var" / "cache")) == [".wh..wh..opq", "new-after", "new-before"]
    assert n.is_opaque(str(root / "opq"), "oci")


@pytest.mark.parametrize("dialect,xattr", [("overlay", "trusted.overlay.opaque"),
                                           ("overlay-user", "user.overlay.opaque")])
def test_apply_whiteouts_overlay(tmp_path, dialect, xattr):
    root = tmp_path / "root"
    stream = WHITEOUT_STREAM + [ti(".wh.later"), ti("later/", tarfile.DIRTYPE)]
    apply_bytes(python_tar(stream, tarfile.PAX_FORMAT), root, dialect=dialect)
    for p in ("etc/motd", "etc/old.d", "motd-missing"):
        st = os.lstat(root / p)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, p
    for p in ("var/cache", "opq", "gone", "later"):
        assert os.getxattr(root / p, xattr) == b"y", p
    assert not any(nm.startswith(".wh.") for _, ds, fs in os.walk(root) for nm in ds + fs)
    assert sorted(os.listdir(root / "var" / "cache")) == ["new-after", "new-before"]


def test_apply_drops_overlay_xattrs_from_stream(tmp_path):
    info, d = ti("dir/", tarfile.DIRTYPE)
    info.pax_headers = {"SCHILY.xattr.trusted.overlay.opaque": "y",
                        "SCHILY.xattr.trusted.overlay.redirect": "/etc",
                        "SCHILY.xattr.user.ok": "1"}
    apply_bytes(python_tar([(info, d)], tarfile.PAX_FORMAT), tmp_path / "root", dialect="overlay")
    assert os.listxattr(tmp_path / "root" / "dir") == ["user.ok"]


# --------------------------------------------------------------------------- export dialects


def tar_listing(path: Path) -> list[tuple[str, str, int]]:
    with tarfile.open(fileobj=io.BytesIO(decompress(path))) as t:
        return [(m.name + ("/" if m.isdir() else ""), m.type.decode(), m.size) for m in t]


def test_export_overlay_dialect(tmp_path):
    root = tmp_path / "upper"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "conf").write_text("c")
    os.mknod(root / "etc" / "removed", stat.S_IFCHR, os.makedev(0, 0))
    os.mknod(root / "etc" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (root / "opaque").mkdir()
    os.setxattr(root / "opaque", "trusted.overlay.opaque", b"y")
    os.setxattr(root / "opaque", "trusted.overlay.origin", b"\x00\x01")
    os.setxattr(root / "opaque", "user.keep", b"k")
    (root / "opaque" / "f").write_text("f")
    os.mknod(root / "zz-removed-dir", stat.S_IFCHR, os.makedev(0, 0))
    os.setxattr(root, "trusted.overlay.opaque", b"y")
    out = tmp_path / "o.tar"
    export(root, out, dialect="overlay")
    names = [e[0] for e in tar_listing(out)]
    assert names == [
        ".wh..wh..opq", ".wh.zz-removed-dir", "etc/", "etc/.wh.removed", "etc/conf",
        "etc/null", "opaque/", "opaque/.wh..wh..opq", "opaque/f",
    ]
    with tarfile.open(out) as t:
        for m in t:
            bookkeeping = ("SCHILY.xattr.trusted.overlay", "SCHILY.xattr.user.overlay")
            assert not any(k.startswith(bookkeeping) for k in m.pax_headers), m.name
            if m.name.split("/")[-1].startswith(".wh."):
                assert m.isreg() and m.size == 0 and m.mode == 0o600
        assert t.getmember("opaque").pax_headers["SCHILY.xattr.user.keep"] == "k"
    # Applying it as OCI and exporting that again gives the same stream.
    oci = tmp_path / "oci"
    apply(out, oci, dialect="oci")
    out2 = tmp_path / "o2.tar"
    export(oci, out2, dialect="oci")
    assert [e[0] for e in tar_listing(out2)] == names


def test_export_oci_dialect(tmp_path):
    root = tmp_path / "aufs-branch"
    (root / "d").mkdir(parents=True)
    (root / "d" / ".wh..wh..opq").touch()
    (root / "d" / "a").write_text("a")
    (root / "d" / ".wh.gone").touch()
    (root / ".wh..wh.aufs").touch()
    # aufs hardlinks every whiteout to its base: they must still come out as plain files.
    os.link(root / ".wh..wh.aufs", root / ".wh.x")
    (root / ".wh..wh.plnk").mkdir()
    (root / ".wh..wh.plnk" / "1.2").write_text("pseudo-link")
    (root / ".wh..wh.orph").mkdir()
    (root / "-first").write_text("-")
    out = tmp_path / "a.tar"
    res = export(root, out, dialect="oci")
    assert [e for e in tar_listing(out)] == [
        (".wh.x", "0", 0),
        ("-first", "0", 1),
        ("d/", "5", 0),
        ("d/.wh..wh..opq", "0", 0),
        ("d/.wh.gone", "0", 0),
        ("d/a", "0", 1),
    ]
    assert res["entries"] == 6


def test_export_changes(tmp_path):
    root = tmp_path / "layer"
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "sub" / "deep").write_text("not listed")
    (root / "dir" / "f").write_text("f")
    (root / "dir" / "link").write_text("same inode")
    os.link(root / "dir" / "link", root / "hl")
    (root / "new").write_text("n")
    os.mknod(root / "dir" / "wo", stat.S_IFCHR, os.makedev(0, 0))
    os.setxattr(root / "dir", "trusted.overlay.opaque", b"y")
    changes = [
        ("/dir", 0),
        ("/dir/f", 1),
        ("/old/file", 2),
        ("/dir/wo", 1),
        ("/new", 1),
        ("/dir/link", 1),
        ("/hl", 1),
        ("/", 0),
    ]
    out = tmp_path / "c.tar.gz"
    res = export(root, out, dialect="overlay", changes=changes, compression="gzip")
    listing = tar_listing(out)
    assert [e[0] for e in listing] == [
        "dir/", "dir/.wh..wh..opq", "dir/f", "old/.wh.file", "dir/.wh.wo", "new", "dir/link", "hl",
    ]
    assert res["entries"] == 8
    assert res["diff_id"] == sha(decompress(out))
    with tarfile.open(out) as t:
        assert t.getmember("hl").islnk() and t.getmember("hl").linkname == "dir/link"
        wh = t.getmember("old/.wh.file")
        assert wh.isreg() and wh.size == 0


def test_export_changes_errors(tmp_path):
    (tmp_path / "l").mkdir()
    with pytest.raises(FileNotFoundError):
        export(tmp_path / "l", tmp_path / "x.tar", changes=[("/missing", 1)])
    with pytest.raises(ValueError):
        export(tmp_path / "l", tmp_path / "x.tar", changes=[("relative", 1)])
    with pytest.raises(ValueError):
        export(tmp_path / "l", tmp_path / "x.tar", changes=[("/a", 7)])
    with pytest.raises(ValueError):
        export(tmp_path / "l", tmp_path / "x.tar", changes=[("/../etc", 1)])
    with pytest.raises(ValueError):
        export(tmp_path / "l", tmp_path / "x.tar", compression="lz4")


def test_export_empty_tree(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "e.tar"
    res = export(tmp_path / "empty", out)
    assert out.read_bytes() == b"\0" * 1024
    assert res == {"bytes": 1024, "entries": 0, "diff_id": sha(b"\0" * 1024)}
    res = apply(out, tmp_path / "dst")
    assert res["entries"] == 0 and os.listdir(tmp_path / "dst") == []


def test_export_to_closed_pipe_is_oserror(rich, tmp_path):
    r, w = os.pipe()
    os.close(r)
    try:
        with pytest.raises(BrokenPipeError):
            n.export_tar(str(rich), w)
    finally:
        os.close(w)


def test_export_deep_tree(tmp_path):
    # Far deeper than the walk's window of open directories; no recursion involved.
    root = tmp_path / "deep"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(200):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.close(os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    out = tmp_path / "deep.tar"
    res = export(root, out)
    assert res["entries"] == 201
    dst = tmp_path / "dst"
    apply(out, dst)
    assert dst.joinpath(*["d"] * 200, "leaf").is_file()


def lower_layers(tmp_path: Path, dialect: str) -> tuple[Path, Path]:
    """Two lower layers in `dialect`: the bottom one has etc/ with passwd (also named
    passwd- and shadow-) and shadow, the top one deletes etc/shadow and etc/shadow-."""
    bottom, top = tmp_path / "bottom", tmp_path / "top"
    apply_bytes(python_tar([
        ti("etc/", tarfile.DIRTYPE, mode=0o750, uid=3, mtime=1_400_000_000),
        ti("etc/passwd", data=b"root:x:0:0", mode=0o640, uid=4),
        ti("etc/passwd-", tarfile.LNKTYPE, linkname="etc/passwd"),
        ti("etc/shadow", data=b"secret"),
        ti("etc/shadow-", tarfile.LNKTYPE, linkname="etc/passwd"),  # deleted by top
    ], tarfile.PAX_FORMAT), bottom, dialect=dialect)
    apply_bytes(python_tar([ti("etc/.wh.shadow"), ti("etc/.wh.shadow-")], tarfile.PAX_FORMAT), top,
                dialect=dialect)
    return bottom, top


@pytest.mark.parametrize("dialect", ["overlay", "oci"])
def test_apply_hardlink_to_a_lower_file_copies_it_up(tmp_path, dialect):
    bottom, top = lower_layers(tmp_path, dialect)
    layer = tmp_path / "layer"
    apply_bytes(python_tar([
        ti("usr/", tarfile.DIRTYPE),
        ti("usr/passwd", tarfile.LNKTYPE, linkname="etc/passwd"),
    ], tarfile.PAX_FORMAT), layer, dialect=dialect, lowers=[str(top), str(bottom)])
    copied, linked = os.lstat(layer / "etc/passwd"), os.lstat(layer / "usr/passwd")
    # the file's other name that still shows comes up with it, as one file
    assert copied.st_ino == linked.st_ino == os.lstat(layer / "etc/passwd-").st_ino
    assert copied.st_nlink == 3
    assert (layer / "etc/passwd").read_bytes() == b"root:x:0:0"
    assert (stat.S_IMODE(copied.st_mode), copied.st_uid) == (0o640, 4)
    # the directory comes up as the uppermost lower that has it shows it, times kept
    etc, shown = os.lstat(layer / "etc"), os.lstat(top / "etc")
    assert (etc.st_mode, etc.st_uid, etc.st_mtime_ns) == (
        shown.st_mode, shown.st_uid, shown.st_mtime_ns)
    assert sorted(os.listdir(layer / "etc")) == ["passwd", "passwd-"]


@pytest.mark.parametrize("dialect", ["overlay", "oci"])
def test_apply_hardlink_to_a_deleted_lower_file_is_refused(tmp_path, dialect):
    bottom, top = lower_layers(tmp_path, dialect)
    for name, tar in [
        ("hidden by a lower layer", [ti("s", tarfile.LNKTYPE, linkname="etc/shadow")]),
        ("deleted by this layer", [ti("etc/.wh.passwd"),
                                   ti("p", tarfile.LNKTYPE, linkname="etc/passwd")]),
        ("below this layer's opaque root", [ti(".wh..wh..opq"),
                                            ti("p", tarfile.LNKTYPE, linkname="etc/passwd")]),
    ]:
        layer = tmp_path / name
        with pytest.raises(n.ArchiveError, match="does not exist|deletes"):
            apply_bytes(python_tar(tar, tarfile.PAX_FORMAT), layer, dialect=dialect,
                        lowers=[str(top), str(bottom)])
        assert not (layer / "etc/passwd").is_file(), name


def test_export_changes_marks_a_remade_empty_directory_opaque(tmp_path):
    parent, root = tmp_path / "parent", tmp_path / "root"
    for tree in (parent, root):
        for d in ("remade", "chmodded", "emptied", "full"):
            (tree / d).mkdir(parents=True)
    (parent / "emptied/gone").write_bytes(b"g")
    (root / "full/f").write_bytes(b"f")
    (root / "remade").rmdir()
    (root / "remade").mkdir()
    os.utime(root / "remade", ns=(1, 1))
    os.chmod(root / "chmodded", 0o700)
    changes = [("/chmodded", 0), ("/emptied", 0), ("/emptied/gone", 2), ("/full", 0),
               ("/full/f", 1), ("/remade", 0)]
    out = tmp_path / "out.tar"
    export(root, out, changes=changes, parent=str(parent))
    with tarfile.open(out) as t:
        names = [m.name.rstrip("/") for m in t.getmembers()]
    # only the one that is the same but for its mtime was removed and made again
    assert names == ["chmodded", "emptied", "emptied/.wh.gone", "full", "full/f", "remade",
                     "remade/.wh..wh..opq"]
    export(root, out, changes=changes)  # without the parent: no guess
    with tarfile.open(out) as t:
        assert ".wh..wh..opq" not in " ".join(t.getnames())
