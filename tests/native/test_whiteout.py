"""Whiteout dialects (storagekit._native, csrc/whiteout) checked against the kernel's view:
os.lstat for files and devices, os.getxattr for opaque markers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from storagekit import _native as n

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, trusted.* xattrs)")

DIALECTS = ["oci", "overlay", "overlay-user"]
OPAQUE_XATTR = {"overlay": "trusted.overlay.opaque", "overlay-user": "user.overlay.opaque"}


def is_overlay_whiteout(p: Path) -> bool:
    st = os.lstat(p)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def xattr(p: Path, name: str) -> bytes | None:
    try:
        return os.getxattr(p, name, follow_symlinks=False)
    except OSError:
        return None


def markers(root: Path) -> dict[str, str]:
    """Every whiteout / opaque marker under root, in any dialect, as {relpath: kind}."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        rel = os.path.relpath(d, root)
        for name, val in ((k, xattr(d, v)) for k, v in OPAQUE_XATTR.items()):
            if val is not None:
                found[rel] = f"opaque:{name}:{val.decode()}"
        for name in dirnames + filenames:
            p = d / name
            r = os.path.normpath(os.path.join(rel, name))
            if is_overlay_whiteout(p):
                found[r] = "chardev"
            elif name == ".wh..wh..opq":
                found[r] = "opq-file"
            elif name.startswith(".wh.") and not name.startswith(".wh..wh."):
                found[r] = "wh-file"
    return found


# --------------------------------------------------------------------------- names


def test_constants():
    assert n.WH_PREFIX == ".wh."
    assert n.WH_META_PREFIX == ".wh..wh."
    assert n.WH_OPAQUE == ".wh..wh..opq"


@pytest.mark.parametrize(
    "name,target",
    [
        (".wh.foo", "foo"),
        (".wh..foo", ".foo"),
        (".wh..wh", ".wh"),
        (".wh.a b", "a b"),
        ("foo", None),
        (".whfoo", None),
        ("wh.foo", None),
        (".wh..wh..opq", None),
        (".wh..wh.plnk", None),
        (".wh..wh.aufs", None),
        (".wh..wh.", None),
    ],
)
def test_whiteout_target(name, target):
    assert n.whiteout_target(name) == target


@pytest.mark.parametrize("name", [".wh.", ".wh..", ".wh...", ".wh.a/b", "a/.wh.b", ".wh.a\0b"])
def test_whiteout_target_rejects(name):
    with pytest.raises(n.ArchiveError):
        n.whiteout_target(name)


def test_archive_error_is_value_error():
    assert issubclass(n.ArchiveError, ValueError)


# --------------------------------------------------------------------------- make_whiteout


def test_make_whiteout_oci(tmp_path):
    n.make_whiteout(str(tmp_path), "foo", "oci")
    st = os.lstat(tmp_path / ".wh.foo")
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    assert not (tmp_path / "foo").exists()
    assert n.is_whiteout(str(tmp_path), ".wh.foo", "oci")


def test_make_whiteout_oci_replaces_existing_marker(tmp_path):
    (tmp_path / ".wh.foo").mkdir()
    (tmp_path / ".wh.foo" / "junk").write_text("x")
    n.make_whiteout(str(tmp_path), "foo", "oci")
    st = os.lstat(tmp_path / ".wh.foo")
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0


@pytest.mark.parametrize("dialect", ["overlay", "overlay-user"])
def test_make_whiteout_overlay_new(tmp_path, dialect):
    n.make_whiteout(str(tmp_path), "foo", dialect)
    st = os.lstat(tmp_path / "foo")
    assert stat.S_ISCHR(st.st_mode)
    assert os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0
    assert stat.S_IMODE(st.st_mode) == 0
    assert n.is_whiteout(str(tmp_path), "foo", dialect)


@pytest.mark.parametrize("dialect", ["overlay", "overlay-user"])
def test_make_whiteout_overlay_replaces_file_and_tree(tmp_path, dialect):
    (tmp_path / "file").write_text("data")
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_text("x")
    os.symlink("/etc", tree / "a" / "link")
    n.make_whiteout(str(tmp_path), "file", dialect)
    n.make_whiteout(str(tmp_path), "tree", dialect)
    assert is_overlay_whiteout(tmp_path / "file")
    assert is_overlay_whiteout(tmp_path / "tree")
    assert os.path.exists("/etc/passwd")  # the symlink inside was removed, not followed
    # Idempotent: a whiteout over a whiteout stays one.
    n.make_whiteout(str(tmp_path), "file", dialect)
    assert is_overlay_whiteout(tmp_path / "file")


def test_make_whiteout_none_deletes(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "f").write_text("x")
    (tmp_path / "keep").write_text("k")
    n.make_whiteout(str(tmp_path), "d", "none")
    n.make_whiteout(str(tmp_path), "missing", "none")
    assert sorted(os.listdir(tmp_path)) == ["keep"]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b"])
@pytest.mark.parametrize("dialect", DIALECTS + ["none"])
def test_make_whiteout_rejects_bad_names(tmp_path, name, dialect):
    with pytest.raises(ValueError):
        n.make_whiteout(str(tmp_path), name, dialect)
    assert os.listdir(tmp_path) == []


def test_make_whiteout_oci_rejects_whiteout_names(tmp_path):
    with pytest.raises(ValueError):
        n.make_whiteout(str(tmp_path), ".wh.x", "oci")


def test_unknown_dialect(tmp_path):
    for call in (
        lambda: n.make_whiteout(str(tmp_path), "x", "aufs2"),
        lambda: n.set_opaque(str(tmp_path), "btrfs"),
        lambda: n.is_whiteout(str(tmp_path), "x", ""),
        lambda: n.is_opaque(str(tmp_path), "OCI"),
        lambda: n.convert_whiteouts(str(tmp_path), "oci", "none"),
    ):
        with pytest.raises(ValueError):
            call()


def test_missing_directory_is_oserror(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        n.make_whiteout(str(tmp_path / "nope"), "x", "overlay")
    assert e.value.filename == str(tmp_path / "nope")


# --------------------------------------------------------------------------- opaque


def test_set_opaque_oci(tmp_path):
    n.set_opaque(str(tmp_path), "oci")
    st = os.lstat(tmp_path / ".wh..wh..opq")
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    assert n.is_opaque(str(tmp_path), "oci")
    assert not n.is_opaque(str(tmp_path), "overlay")


@pytest.mark.parametrize("dialect", ["overlay", "overlay-user"])
def test_set_opaque_overlay(tmp_path, dialect):
    assert not n.is_opaque(str(tmp_path), dialect)
    n.set_opaque(str(tmp_path), dialect)
    assert os.getxattr(tmp_path, OPAQUE_XATTR[dialect]) == b"y"
    other = "overlay-user" if dialect == "overlay" else "overlay"
    assert xattr(tmp_path, OPAQUE_XATTR[other]) is None
    assert n.is_opaque(str(tmp_path), dialect)
    assert not n.is_opaque(str(tmp_path), other)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("dialect", ["overlay", "overlay-user"])
def test_is_opaque_needs_y(tmp_path, dialect):
    os.setxattr(tmp_path, OPAQUE_XATTR[dialect], b"x")  # "x": has xattr whiteouts, not opaque
    assert not n.is_opaque(str(tmp_path), dialect)
    os.setxattr(tmp_path, OPAQUE_XATTR[dialect], b"y")
    assert n.is_opaque(str(tmp_path), dialect)


def test_set_opaque_none_empties(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "f").write_text("x")
    os.symlink("/", tmp_path / "root-link")
    n.set_opaque(str(tmp_path), "none")
    assert os.listdir(tmp_path) == []
    assert not n.is_opaque(str(tmp_path), "none")


# --------------------------------------------------------------------------- is_whiteout


def test_is_whiteout_per_dialect(tmp_path):
    os.mknod(tmp_path / "wo", stat.S_IFCHR, os.makedev(0, 0))
    os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (tmp_path / ".wh.gone").touch()
    (tmp_path / ".wh..wh.aufs").touch()
    (tmp_path / ".wh..wh.plnk").mkdir()
    (tmp_path / "plain").touch()
    d = str(tmp_path)
    for dialect in ("overlay", "overlay-user"):
        assert n.is_whiteout(d, "wo", dialect)
        assert not n.is_whiteout(d, "null", dialect)  # a real device, not 0/0
        assert not n.is_whiteout(d, ".wh.gone", dialect)
        assert not n.is_whiteout(d, "plain", dialect)
        assert not n.is_whiteout(d, "absent", dialect)
    assert n.is_whiteout(d, ".wh.gone", "oci")
    assert not n.is_whiteout(d, ".wh..wh.aufs", "oci")
    assert not n.is_whiteout(d, ".wh..wh.plnk", "oci")
    assert not n.is_whiteout(d, "wo", "oci")
    assert not n.is_whiteout(d, ".wh.absent", "oci")
    for name in ("wo", ".wh.gone", "plain"):
        assert not n.is_whiteout(d, name, "none")


# --------------------------------------------------------------------------- conversion


def build_oci_tree(root: Path) -> None:
    """A layer in the aufs/OCI dialect: nested whiteouts, opaque dirs, bookkeeping."""
    (root / "etc" / "conf.d").mkdir(parents=True)
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (root / "etc" / ".wh.motd").touch()
    (root / "etc" / "conf.d" / ".wh.old.conf").touch()
    (root / "etc" / "conf.d" / "new.conf").write_text("x=1\n")
    (root / "var" / "cache").mkdir(parents=True)
    (root / "var" / "cache" / ".wh..wh..opq").touch()
    (root / "var" / "cache" / "fresh").write_text("f")
    (root / "opaque-empty").mkdir()
    (root / "opaque-empty" / ".wh..wh..opq").touch()
    (root / ".wh.removed-dir").touch()
    (root / ".wh..wh..opq").touch()  # the layer root itself is opaque
    # A deleted lower directory replaced in this layer by a new one.
    (root / "replaced").mkdir()
    (root / "replaced" / "new").write_text("n")
    (root / ".wh.replaced").touch()
    # aufs bookkeeping: left alone, never descended into.
    (root / ".wh..wh.aufs").touch()
    (root / ".wh..wh.plnk").mkdir()
    (root / ".wh..wh.plnk" / ".wh.not-a-whiteout").touch()
    (root / ".wh..wh.orph").mkdir()


def test_convert_oci_overlay_oci_round_trip(tmp_path):
    root = tmp_path / "layer"
    root.mkdir()
    build_oci_tree(root)

    assert n.convert_whiteouts(str(root), "oci", "overlay") == 7
    assert markers(root) == {
        ".": "opaque:overlay:y",
        "etc/motd": "chardev",
        "etc/conf.d/old.conf": "chardev",
        "var/cache": "opaque:overlay:y",
        "opaque-empty": "opaque:overlay:y",
        "removed-dir": "chardev",
        "replaced": "opaque:overlay:y",
        # bookkeeping is untouched
        ".wh..wh.plnk/.wh.not-a-whiteout": "wh-file",
    }
    assert (root / "replaced" / "new").read_text() == "n"
    assert (root / ".wh..wh.aufs").is_file()
    assert sorted(os.listdir(root / "var" / "cache")) == ["fresh"]

    assert n.convert_whiteouts(str(root), "overlay", "overlay-user") == 4
    assert markers(root) == {
        ".": "opaque:overlay-user:y",
        "etc/motd": "chardev",
        "etc/conf.d/old.conf": "chardev",
        "var/cache": "opaque:overlay-user:y",
        "opaque-empty": "opaque:overlay-user:y",
        "removed-dir": "chardev",
        "replaced": "opaque:overlay-user:y",
        ".wh..wh.plnk/.wh.not-a-whiteout": "wh-file",
    }

    assert n.convert_whiteouts(str(root), "overlay-user", "oci") == 7
    assert markers(root) == {
        ".wh..wh..opq": "opq-file",
        "etc/.wh.motd": "wh-file",
        "etc/conf.d/.wh.old.conf": "wh-file",
        "var/cache/.wh..wh..opq": "opq-file",
        "opaque-empty/.wh..wh..opq": "opq-file",
        ".wh.removed-dir": "wh-file",
        # the deleted-and-recreated directory is now expressed as an opaque directory
        "replaced/.wh..wh..opq": "opq-file",
        ".wh..wh.plnk/.wh.not-a-whiteout": "wh-file",
    }
    for p in (root / "etc" / ".wh.motd", root / ".wh..wh..opq"):
        st = os.lstat(p)
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    # Content survives the round trip.
    assert (root / "etc" / "hosts").read_text() == "127.0.0.1 localhost\n"
    assert (root / "etc" / "conf.d" / "new.conf").read_text() == "x=1\n"


def test_convert_same_dialect_is_noop(tmp_path):
    build_oci_tree(tmp_path)
    before = markers(tmp_path)
    assert n.convert_whiteouts(str(tmp_path), "oci", "oci") == 0
    assert markers(tmp_path) == before


def test_convert_does_not_follow_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".wh.victim").touch()
    (outside / "victim").write_text("keep")
    root = tmp_path / "layer"
    root.mkdir()
    os.symlink(outside, root / "link")
    os.symlink("../outside", root / "rel-link")
    assert n.convert_whiteouts(str(root), "oci", "overlay") == 0
    assert sorted(os.listdir(outside)) == [".wh.victim", "victim"]
    assert (outside / "victim").read_text() == "keep"


def test_convert_deep_tree_without_recursion(tmp_path):
    # Deeper than any recursion limit and than the open-descriptor window of the walk.
    root = tmp_path / "layer"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    depth = 300
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        open(".wh.deep", "w", opener=lambda p, f: os.open(p, f, 0o600, dir_fd=fd)).close()
    finally:
        os.close(fd)
    assert n.convert_whiteouts(str(root), "oci", "overlay") == 1
    deep = root.joinpath(*["d"] * depth)
    assert is_overlay_whiteout(deep / "deep")
    assert n.convert_whiteouts(str(root), "overlay", "oci") == 1
    assert (deep / ".wh.deep").is_file()
