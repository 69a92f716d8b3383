"""Hostile and broken layer tars against apply_tar.

Every case applies a stream into sandbox/layer. The sandbox also holds sentinel files, a
decoy /etc and a directory outside the layer; absolute symlinks in the streams point at a
decoy under tmp_path (outside the sandbox) or at real system paths. Whatever happens (the
stream is applied, or refused with ArchiveError/OSError naming the problem), nothing outside
sandbox/layer may change: the whole of tmp_path minus the layer is compared before and after
(names, lstat including ctime and link counts, contents, symlink targets, xattrs), and a
path under the real /etc must not appear.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import re
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import tarcraft as tc
from tarcraft import Tar

from storagekit import _native as n

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, xattrs)")

REAL_PROBE = "/etc/storagekit-escape-test"


@dataclass
class Sandbox:
    tmp: Path
    root: Path      # tmp/sandbox
    layer: Path     # tmp/sandbox/layer
    decoy: Path     # tmp/decoy: an absolute-path target outside the sandbox
    stream: Path    # where the tar under test is written

    @property
    def abs_outside(self) -> str:
        return str(self.root / "outside-dir")


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    root = tmp_path / "sandbox"
    layer = root / "layer"
    layer.mkdir(parents=True)
    (root / "sentinel").write_text("do not touch\n")
    os.setxattr(root / "sentinel", "user.keep", b"1")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "outside-dir").mkdir()
    (root / "outside-dir" / "file").write_text("outside\n")
    os.chmod(root / "outside-dir", 0o755)
    decoy = tmp_path / "decoy"
    (decoy / "etc").mkdir(parents=True)
    (decoy / "etc" / "passwd").write_text("decoy\n")
    (decoy / "target").write_text("decoy target\n")
    return Sandbox(tmp_path, root, layer, decoy, tmp_path / "stream.tar")


def snapshot_outside(sb: Sandbox) -> dict:
    """Everything about tmp_path except the layer's own subtree."""
    snap = {}
    layer = os.fsencode(sb.layer)
    for dirpath, dirnames, filenames in os.walk(os.fsencode(sb.tmp)):
        if dirpath == layer:
            dirnames[:] = []
            continue
        entries = [dirpath] if dirpath == os.fsencode(sb.tmp) else []
        entries += [os.path.join(dirpath, x) for x in dirnames + filenames]
        for p in entries:
            if p == layer:
                continue
            st = os.lstat(p)
            rec = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                   st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink, st.st_ino,
                   tuple(sorted((x, os.getxattr(p, x, follow_symlinks=False))
                                for x in os.listxattr(p, follow_symlinks=False))))
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    rec += (hashlib.sha256(f.read()).hexdigest(),)
            elif stat.S_ISLNK(st.st_mode):
                rec += (os.readlink(p),)
            snap[p] = rec
    return snap


def apply_hostile(sb: Sandbox, data: bytes, dialect: str = "none"):
    """Applies `data`; returns the result dict or the exception raised."""
    sb.stream.write_bytes(data)
    assert not os.path.lexists(REAL_PROBE)
    before = snapshot_outside(sb)
    fd = os.open(sb.stream, os.O_RDONLY)
    try:
        outcome = n.apply_tar(fd, str(sb.layer), dialect=dialect)
    except (n.ArchiveError, OSError) as e:
        outcome = e
    finally:
        os.close(fd)
    assert snapshot_outside(sb) == before, "something outside the layer changed"
    assert not os.path.lexists(REAL_PROBE), "wrote to the real /etc"
    return outcome


@dataclass
class Case:
    id: str
    build: Callable[[Sandbox], bytes]
    error: str | None = None        # regex the error message must match; None: must apply
    check: Callable[[Sandbox], None] | None = None
    prepare: Callable[[Sandbox], None] | None = None
    dialect: str = "none"


def content(p: Path) -> bytes:
    return p.read_bytes()


def is_type(p: Path, test) -> bool:
    return test(os.lstat(p).st_mode)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, 6)


def zst(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def small_tar() -> bytes:
    noise = random.Random(1234).randbytes(200_000)  # incompressible: stored deflate blocks
    return Tar().dir("d/").file("d/a", noise).file("d/b", b"b" * 70_000).bytes()


def flip_middle_byte(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes([data[mid] ^ 0x55]) + data[mid + 1:]


def deep_dirs(levels: int) -> bytes:
    t = Tar()
    for i in range(1, levels + 1):
        t.dir("/".join(["a"] * i) + "/")
    return t.bytes()


def prepare_symlink_to_outside(sb: Sandbox) -> None:
    os.symlink(sb.abs_outside, sb.layer / "l")


def prepare_lower(sb: Sandbox) -> None:
    (sb.layer / "lower").mkdir()
    (sb.layer / "lower" / "f").write_text("lower")
    os.symlink(sb.abs_outside, sb.layer / "lower" / "out")
    os.symlink("../../outside-dir", sb.layer / "rel-out")


CASES = [
    # ------------------------------------------------------------------ paths
    Case("dotdot", lambda sb: Tar().file("../evil", b"x").bytes(), "escapes the layer root"),
    Case("dotdot-nested", lambda sb: Tar().file("a/../../evil", b"x").bytes(),
         r"entry 'a/\.\./\.\./evil' escapes the layer root"),
    Case("dotdot-deep", lambda sb: Tar().file("a/b/../../../../sentinel", b"x").bytes(),
         "escapes"),
    Case("dotdot-inside-ok", lambda sb: Tar().file("a/b/../../inside", b"x").bytes(),
         check=lambda sb: content(sb.layer / "inside") == b"x"),
    Case("absolute-path", lambda sb: Tar().file("/evil", b"x").bytes(),
         check=lambda sb: content(sb.layer / "evil") == b"x"),
    Case("absolute-etc", lambda sb: Tar().file(REAL_PROBE, b"pwned").bytes(),
         check=lambda sb: content(sb.layer / REAL_PROBE.lstrip("/")) == b"pwned"),
    Case("absolute-sandbox-path",
         lambda sb: Tar().file(str(sb.root / "sentinel"), b"pwned").bytes(),
         check=lambda sb: content(sb.layer / str(sb.root / "sentinel").lstrip("/")) == b"pwned"),
    Case("component-over-255", lambda sb: Tar().file("d/" + "x" * 256, b"x").bytes(),
         "longer than 255"),
    Case("path-over-path-max", lambda sb: Tar().file("ab/" * 1400 + "f", b"x").bytes(),
         "longer than 4095"),
    Case("ten-thousand-deep-entry", lambda sb: Tar().dir("a/" * 10_000).bytes(),
         "longer than 4095"),
    Case("not-a-directory-parent", lambda sb: Tar().file("f", b"x").file("f/x", b"y").bytes(),
         "not a directory"),
    Case("root-as-file", lambda sb: Tar().file(".", b"x").bytes(), "replace the layer root"),
    Case("gnu-longname-escape",
         lambda sb: tc.header("././@LongLink", typeflag=b"L", size=12) + tc.pad(b"../../evil\0\0")
         + tc.file_entry("placeholder", b"x") + tc.end(), "escapes"),
    Case("pax-path-escape",
         lambda sb: tc.pax_header({"path": "../evil"}) + tc.file_entry("safe", b"x") + tc.end(),
         r"entry '\.\./evil' escapes"),
    # ------------------------------------------------------------------ symlinks
    Case("abs-symlink-to-decoy-then-write",
         lambda sb: Tar().symlink("link", str(sb.decoy)).file("link/target", b"pwned").bytes(),
         "symlink to nowhere"),
    Case("abs-symlink-to-etc-lands-in-layer",
         lambda sb: Tar().dir("etc/").symlink("link", "/etc")
         .file("link/storagekit-escape-test", b"pwned").bytes(),
         check=lambda sb: content(sb.layer / "etc" / "storagekit-escape-test") == b"pwned"),
    Case("rel-symlink-up-two",
         lambda sb: Tar().symlink("link", "../..").file("link/sentinel", b"pwned").bytes(),
         check=lambda sb: content(sb.layer / "sentinel") == b"pwned"),
    Case("rel-symlink-to-sibling-of-layer",
         lambda sb: Tar().symlink("link", "../outside-dir").file("link/file", b"pwned").bytes(),
         "symlink to nowhere"),
    Case("symlink-chain",
         lambda sb: Tar().symlink("a", "b").symlink("b", "c").symlink("c", "/")
         .file("a/pwn", b"x").bytes(),
         check=lambda sb: content(sb.layer / "pwn") == b"x"),
    Case("symlink-to-dotdot",
         lambda sb: Tar().symlink("up", "..").file("up/up/up/escape", b"x").bytes(),
         check=lambda sb: content(sb.layer / "escape") == b"x"),
    Case("symlink-to-dotdot-in-subdir",
         lambda sb: Tar().dir("d/").symlink("d/up", "../../..").file("d/up/etc/passwd", b"x")
         .bytes(), check=lambda sb: content(sb.layer / "etc" / "passwd") == b"x"),
    Case("symlink-loop", lambda sb: Tar().symlink("a", "b").symlink("b", "a").file("a/x", b"x")
         .bytes(), "symlink loop"),
    Case("symlink-replaces-dir-then-write",
         lambda sb: Tar().dir("d/").file("d/f", b"1").symlink("d", sb.abs_outside)
         .file("d/file", b"pwned").bytes(), "symlink to nowhere"),
    Case("dir-over-symlink-to-outside",
         lambda sb: Tar().symlink("d", sb.abs_outside).dir("d/", mode=0o700).file("d/x", b"x")
         .bytes(),
         check=lambda sb: is_type(sb.layer / "d", stat.S_ISDIR)
         and content(sb.layer / "d" / "x") == b"x"),
    Case("file-over-symlink-to-outside",
         lambda sb: Tar().symlink("s", str(sb.root / "sentinel")).file("s", b"pwned", mode=0o777)
         .bytes(),
         check=lambda sb: content(sb.layer / "s") == b"pwned"),
    Case("xattr-and-times-on-symlink-pointing-out",
         lambda sb: Tar().symlink("s", str(sb.root / "sentinel"),
                                  pax={"SCHILY.xattr.trusted.pwn": "1"}).bytes(),
         check=lambda sb: os.getxattr(sb.layer / "s", "trusted.pwn",
                                      follow_symlinks=False) == b"1"),
    Case("symlink-target-over-4095",
         lambda sb: Tar().symlink("s", "x/" * 2100).bytes(), "over 4095"),
    # ------------------------------------------------------------------ hardlinks
    Case("hardlink-outside-relative", lambda sb: Tar().hardlink("h", "../sentinel").bytes(),
         r"hardlink target '\.\./sentinel' escapes"),
    Case("hardlink-outside-absolute",
         lambda sb: Tar().hardlink("h", str(sb.root / "sentinel")).bytes(), "does not exist"),
    Case("hardlink-through-symlinked-parent",
         lambda sb: Tar().symlink("l", str(sb.root)).hardlink("h", "l/sentinel").bytes(),
         "does not exist"),
    Case("hardlink-to-symlink-pointing-out",
         lambda sb: Tar().symlink("s", str(sb.root / "sentinel")).hardlink("h", "s").bytes(),
         check=lambda sb: os.lstat(sb.layer / "h").st_ino == os.lstat(sb.layer / "s").st_ino
         and is_type(sb.layer / "h", stat.S_ISLNK)),
    Case("hardlink-to-symlink-then-write",
         lambda sb: Tar().symlink("s", str(sb.root / "sentinel")).hardlink("h", "s")
         .file("h", b"pwned").bytes(),
         check=lambda sb: content(sb.layer / "h") == b"pwned"
         and is_type(sb.layer / "s", stat.S_ISLNK)),
    Case("hardlink-then-write-through",
         lambda sb: Tar().file("f", b"orig").hardlink("h", "f").file("h", b"new").bytes(),
         check=lambda sb: content(sb.layer / "f") == b"orig" and content(sb.layer / "h") == b"new"),
    Case("hardlink-to-directory", lambda sb: Tar().dir("d/").hardlink("h", "d").bytes(),
         "directory"),
    Case("hardlink-to-itself", lambda sb: Tar().hardlink("h", "h").bytes(), "does not exist"),
    Case("pax-linkpath-escape",
         lambda sb: tc.pax_header({"linkpath": "../sentinel"})
         + tc.header("h", typeflag=b"1", linkname="ok") + tc.end(), "escapes"),
    # ------------------------------------------------------------------ special files
    Case("device-nodes",
         lambda sb: Tar().device("null", b"3", 1, 3).device("sda", b"4", 8, 0)
         .device("fifo", b"6", 0, 0, 0o600).bytes(),
         check=lambda sb: is_type(sb.layer / "null", stat.S_ISCHR)
         and is_type(sb.layer / "sda", stat.S_ISBLK) and is_type(sb.layer / "fifo", stat.S_ISFIFO)),
    Case("unknown-typeflag-is-regular",
         lambda sb: tc.file_entry("z", b"zz", typeflag=b"Z") + tc.end(),
         check=lambda sb: content(sb.layer / "z") == b"zz"),
    # ------------------------------------------------------------------ whiteouts
    Case("whiteout-alone", lambda sb: Tar().file(".wh.").bytes(), r"'\.wh\.'.*names no entry"),
    Case("whiteout-of-dot", lambda sb: Tar().file("a/.wh..").bytes(), "names no entry"),
    Case("whiteout-of-dotdot", lambda sb: Tar().file(".wh...").bytes(), "names no entry"),
    Case("whiteout-of-dotdot-overlay", lambda sb: Tar().file("x/.wh...").bytes(),
         "names no entry", dialect="overlay"),
    Case("whiteout-escaping-parent", lambda sb: Tar().file("../.wh.sentinel").bytes(),
         "escapes"),
    Case("whiteout-inside-whiteout", lambda sb: Tar().file(".wh.a/b", b"x").bytes(),
         "inside whiteout"),
    Case("whiteout-through-symlink-none",
         lambda sb: Tar().file("l/.wh.file").bytes(), prepare=prepare_symlink_to_outside,
         check=lambda sb: is_type(sb.layer / "l", stat.S_ISLNK)),
    Case("whiteout-of-symlink-to-outside",
         lambda sb: Tar().file(".wh.l").bytes(), prepare=prepare_symlink_to_outside,
         check=lambda sb: not os.path.lexists(sb.layer / "l")),
    Case("opaque-root-none",
         lambda sb: Tar().file(".wh..wh..opq").file("new", b"n").bytes(), prepare=prepare_lower,
         check=lambda sb: os.listdir(sb.layer) == ["new"]),
    Case("opaque-symlinked-dir-none",
         lambda sb: Tar().file("l/.wh..wh..opq").bytes(), prepare=prepare_symlink_to_outside,
         check=lambda sb: is_type(sb.layer / "l", stat.S_ISLNK)),
    Case("whiteout-through-symlink-overlay",
         lambda sb: Tar().file("l/.wh.file").bytes(), "symlink to nowhere",
         prepare=prepare_symlink_to_outside, dialect="overlay"),
    Case("opaque-through-symlink-overlay",
         lambda sb: Tar().file("l/.wh..wh..opq").bytes(), "symlink to nowhere",
         prepare=prepare_symlink_to_outside, dialect="overlay-user"),
    Case("whiteout-same-layer-symlink-overlay",
         lambda sb: Tar().symlink("l", sb.abs_outside).file(".wh.l").bytes(), dialect="overlay",
         check=lambda sb: is_type(sb.layer / "l", stat.S_ISLNK)),
    Case("whiteout-oci-writes-files",
         lambda sb: Tar().file("a/.wh.x").file("a/.wh..wh..opq").file(".wh..wh.plnk/1.1").bytes(),
         dialect="oci",
         check=lambda sb: sorted(os.listdir(sb.layer / "a")) == [".wh..wh..opq", ".wh.x"]
         and not os.path.lexists(sb.layer / ".wh..wh.plnk")),
    # ------------------------------------------------------------------ replacement
    Case("duplicate-entries",
         lambda sb: Tar().file("f", b"first").file("f", b"second").bytes(),
         check=lambda sb: content(sb.layer / "f") == b"second"),
    Case("file-replaces-dir-and-back",
         lambda sb: Tar().dir("d/").file("d/f", b"1").file("d", b"file").dir("d/")
         .file("d/g", b"2").bytes(),
         check=lambda sb: os.listdir(sb.layer / "d") == ["g"]),
    Case("deep-tree-then-whiteout",
         lambda sb: deep_dirs(1500) + b"",  # applied; removed by the next case's whiteout
         check=lambda sb: (sb.layer.joinpath(*["a"] * 1500)).is_dir()),
    # ------------------------------------------------------------------ broken streams
    Case("truncated-gzip", lambda sb: gz(small_tar())[:-4000], "gzip stream: truncated"),
    Case("truncated-zstd", lambda sb: zst(small_tar())[:-3000], "zstd|truncated|Truncated"),
    Case("corrupt-gzip-stored-block",  # deflate stores noise as is: only the CRC notices
         lambda sb: flip_middle_byte(gz(small_tar())), "gzip stream: incorrect data check"),
    Case("corrupt-gzip-trailer-length",
         lambda sb: (lambda d: d[:-1] + bytes([d[-1] ^ 1]))(gz(small_tar())),
         "gzip stream: incorrect length check"),
    Case("gzip-trailing-garbage", lambda sb: gz(small_tar()) + b"garbage!" * 8,
         "gzip stream: incorrect header check"),
    Case("gzip-multi-member", lambda sb: (lambda t: gz(t[:300_000]) + gz(t[300_000:]))(
         small_tar()), check=lambda sb: len(content(sb.layer / "d" / "a")) == 200_000),
    Case("truncated-plain-mid-file", lambda sb: small_tar()[:150_000], "Truncated|truncated"),
    Case("bad-checksum-first", lambda sb: tc.header("f", size=0, checksum_delta=7) + tc.end(),
         "not a tar archive"),
    Case("bad-checksum-second",
         lambda sb: tc.file_entry("ok", b"1") + tc.header("bad", checksum_delta=-3) + tc.end(),
         "after entry 'ok'"),
    Case("garbage", lambda sb: bytes((i * 7919 + 13) % 251 for i in range(64 * 1024)),
         "not a tar archive"),
    Case("empty-stream", lambda sb: b"", "empty stream"),
    Case("gzip-of-nothing", lambda sb: gz(b""), "empty stream"),
    Case("only-end-of-archive", lambda sb: b"\0" * 10240,
         check=lambda sb: os.listdir(sb.layer) == []),
    Case("huge-declared-size-no-data",
         lambda sb: tc.header("huge", size=1 << 40, size_field=None) + tc.end(),
         "huge.*(Truncated|truncated)"),
    Case("huge-sparse-file",
         lambda sb: tc.pax_header({"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                                   "GNU.sparse.name": "sparse",
                                   "GNU.sparse.realsize": str(1 << 40)})
         + tc.file_entry("GNUSparseFile.0/sparse", tc.pad(b"1\n0\n0\n")) + tc.end(),
         check=lambda sb: os.stat(sb.layer / "sparse").st_size == 1 << 40
         and os.stat(sb.layer / "sparse").st_blocks == 0),
    Case("negative-size",
         lambda sb: tc.header("neg", size_field=b"\xff" * 12) + tc.end(), "neg|size|Damaged"),
    Case("pax-header-bomb",
         lambda sb: tc.header("PaxHeader", typeflag=b"x", size=2 << 20) + b"\0" * (2 << 20)
         + tc.file_entry("f", b"x") + tc.end(), "too large"),
    Case("pax-record-over-1mib",
         lambda sb: tc.pax_header(b"1048600 path=" + b"a" * 1048580 + b"\n")
         + tc.file_entry("f", b"x") + tc.end(), "too large|pax|> 1MB"),
    Case("pax-header-chain",
         lambda sb: b"".join(tc.pax_header({"comment": str(i)}) for i in range(40))
         + tc.file_entry("f", b"x") + tc.end(), "special headers|malformed pax"),
    Case("pax-malformed-record",
         lambda sb: tc.pax_header(b"9999 path=x\n") + tc.file_entry("f", b"x") + tc.end(),
         "pax|malformed"),
    Case("invalid-xattr-name",
         lambda sb: Tar().file("f", b"x", pax={"SCHILY.xattr.nonamespace": "v"}).bytes(),
         "invalid xattr name 'nonamespace'"),
    Case("empty-xattr-name-suffix",
         lambda sb: Tar().file("f", b"x", pax={"SCHILY.xattr.user.": "v"}).bytes(),
         "invalid xattr name"),
    Case("xattr-value-too-big",
         lambda sb: Tar().file("f", b"x", pax={"SCHILY.xattr.user.big": "v" * 70_000}).bytes(),
         "larger than 64 KiB"),
    Case("overlay-xattrs-in-stream-dropped",
         lambda sb: Tar().dir("d/").file("d/f", b"x", pax={
             "SCHILY.xattr.trusted.overlay.redirect": "/etc",
             "SCHILY.xattr.trusted.overlay.metacopy": ""}).bytes(), dialect="overlay",
         check=lambda sb: os.listxattr(sb.layer / "d" / "f") == []),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile(sandbox, case):
    if "zstd" in case.id and subprocess.run(["which", "zstd"], capture_output=True).returncode:
        pytest.skip("zstd is not installed")
    if case.prepare:
        case.prepare(sandbox)
    outcome = apply_hostile(sandbox, case.build(sandbox), case.dialect)
    try:
        if case.error is None:
            assert isinstance(outcome, dict), f"refused: {outcome!r}"
        else:
            assert isinstance(outcome, (n.ArchiveError, OSError)), f"applied: {outcome!r}"
            assert re.search(case.error, str(outcome)), str(outcome)
        if case.check:
            assert case.check(sandbox) is not False
    finally:
        # Very deep trees are beyond shutil.rmtree's recursion; remove them here.
        subprocess.run(["rm", "-rf", "--one-file-system", str(sandbox.layer)], check=True)


def test_deep_tree_applied_and_whited_out(sandbox):
    """2000 nested directories (near the PATH_MAX bound) are applied, then removed by a
    whiteout in a second layer, all without recursion."""
    try:
        res = apply_hostile(sandbox, deep_dirs(2000))
        assert isinstance(res, dict), res
        assert res["entries"] == 2000
        res = apply_hostile(sandbox, Tar().file(".wh.a").file("after", b"x").bytes())
        assert isinstance(res, dict), res
        assert os.listdir(sandbox.layer) == ["after"]
    finally:
        subprocess.run(["rm", "-rf", str(sandbox.layer)], check=True)


def test_progressively_deeper_stream_is_bounded(sandbox):
    """A stream nesting directories until paths outgrow PATH_MAX stops with an error at that
    point instead of exhausting anything."""
    try:
        out = apply_hostile(sandbox, deep_dirs(2100))
        assert isinstance(out, n.ArchiveError)
        assert "longer than 4095" in str(out)
    finally:
        subprocess.run(["rm", "-rf", str(sandbox.layer)], check=True)


def test_real_etc_untouched_by_absolute_symlink_chain(sandbox):
    data = (Tar().symlink("etc", "/etc").symlink("e2", "etc")
            .file("e2/storagekit-escape-test", b"pwned").bytes())
    out = apply_hostile(sandbox, data)
    # Inside the root, "etc" -> "/etc" is itself: a loop, and the write is refused.
    assert isinstance(out, n.ArchiveError) and "symlink loop" in str(out)


def test_hostile_stream_through_pipe(sandbox):
    """Same guarantees when the stream comes from a pipe and stops mid-way."""
    data = Tar().file("ok", b"1").file("../escape", b"2").file("never", b"3").bytes()
    before = snapshot_outside(sandbox)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # writer child: feed and exit, ignoring a closed pipe
        os.close(r)
        try:
            os.write(w, data)
        finally:
            os._exit(0)
    os.close(w)
    try:
        with pytest.raises(n.ArchiveError, match="escapes"):
            n.apply_tar(r, str(sandbox.layer))
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    assert snapshot_outside(sandbox) == before
    assert os.listdir(sandbox.layer) == ["ok"]
