"""changes / tree_size / paths_size against real trees, with the expected lists written out."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from storagekit import _native as n

M, A, D = n.CHANGE_MODIFY, n.CHANGE_ADD, n.CHANGE_DELETE


def write(path: Path, data: bytes | str = b"x", mtime_ns: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def clone(src: Path, dst: Path) -> None:
    """The layer starts as an exact copy of its parent (GNU cp as the reference copier)."""
    subprocess.run(["cp", "-a", "--preserve=all", str(src), str(dst)], check=True)


def test_constants():
    assert (n.CHANGE_MODIFY, n.CHANGE_ADD, n.CHANGE_DELETE) == (0, 1, 2)


def test_identical_trees_have_no_changes(tmp_path):
    parent = tmp_path / "parent"
    write(parent / "a/b/c", "data")
    os.symlink("c", parent / "a/b/l")
    os.mkfifo(parent / "fifo")
    os.setxattr(parent / "a/b/c", "user.k", b"v")
    clone(parent, tmp_path / "layer")
    assert n.changes(str(tmp_path / "layer"), str(parent)) == []


def test_docker_semantics(tmp_path):
    parent, layer = tmp_path / "parent", tmp_path / "layer"
    t0 = 1_600_000_000_000_000_000
    write(parent / "keep.txt", "keep")
    write(parent / "mod.txt", "old")
    write(parent / "del.txt", "gone")
    write(parent / "deldir/a", "a")
    write(parent / "deldir/sub/b", "b")
    write(parent / "dir/inner.txt", "same")
    write(parent / "dir/changed.txt", "v1")
    write(parent / "chmod.txt", "c")
    write(parent / "xattr.txt", "x")
    write(parent / "f2d", "was a file")
    write(parent / "sec.txt", "s", mtime_ns=t0 + 500_000_000)
    write(parent / "sec2.txt", "s", mtime_ns=t0 + 500_000_000)
    write(parent / "same_ns.txt", "s", mtime_ns=t0 + 123)
    write(parent / "unchanged/deep/file", "u")
    (parent / "dirxattr").mkdir()
    write(parent / "dmtime/kept", "k")
    (parent / "emptied").mkdir()
    os.symlink("aaa", parent / "link")
    clone(parent, layer)

    write(layer / "mod.txt", "new content")
    (layer / "del.txt").unlink()
    subprocess.run(["rm", "-r", str(layer / "deldir")], check=True)
    write(layer / "dir/changed.txt", "v2 longer")
    os.chmod(layer / "chmod.txt", 0o600)
    os.setxattr(layer / "xattr.txt", "user.added", b"1")
    (layer / "f2d").unlink()
    write(layer / "f2d/x", "now a dir")
    os.utime(layer / "sec.txt", ns=(t0, t0))  # same second, tar precision: unchanged
    os.utime(layer / "sec2.txt", ns=(t0 + 700_000_000, t0 + 700_000_000))
    os.utime(layer / "same_ns.txt", ns=(t0 + 123, t0 + 123))
    os.setxattr(layer / "dirxattr", "user.d", b"1")
    os.utime(layer / "dmtime", ns=(t0, t0))  # a directory's mtime alone is no change...
    # ...unless it is empty on both sides: it was removed and made again (overlay and aufs
    # store it opaque, and their diffs carry it)
    (layer / "emptied").rmdir()
    (layer / "emptied").mkdir()
    os.utime(layer / "emptied", ns=(t0, t0))
    # Same length target, same mtime: only the target tells the difference.
    st = os.lstat(layer / "link")
    os.unlink(layer / "link")
    os.symlink("bbb", layer / "link")
    os.utime(layer / "link", ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    write(layer / "new.txt", "n")
    write(layer / "newdir/n1", "1")
    write(layer / "newdir/sub/n2", "2")

    assert n.changes(str(layer), str(parent)) == [
        ("/chmod.txt", M),
        ("/del.txt", D),
        ("/deldir", D),
        ("/dir", M),
        ("/dir/changed.txt", M),
        ("/dirxattr", M),
        ("/emptied", M),
        ("/f2d", M),
        ("/f2d/x", A),
        ("/link", M),
        ("/mod.txt", M),
        ("/new.txt", A),
        ("/newdir", A),
        ("/newdir/n1", A),
        ("/newdir/sub", A),
        ("/newdir/sub/n2", A),
        ("/sec2.txt", M),
        ("/xattr.txt", M),
    ]


def test_mtime_nanoseconds_rules(tmp_path):
    parent, layer = tmp_path / "parent", tmp_path / "layer"
    s = 1_700_000_000 * 10**9
    cases = {  # name: (parent mtime, layer mtime, changed?)
        "exact": (s + 5, s + 5, False),
        "layer_whole_second": (s + 5, s, False),
        "parent_whole_second": (s, s + 5, False),
        "both_fraction": (s + 5, s + 6, True),
        "other_second": (s, s + 10**9, True),
    }
    for name, (in_parent, in_layer, _) in cases.items():
        write(parent / name, "same", mtime_ns=in_parent)
        write(layer / name, "same", mtime_ns=in_layer)
    expected = sorted(("/" + name, M) for name, (_, _, ch) in cases.items() if ch)
    assert n.changes(str(layer), str(parent)) == expected


def test_type_and_special_changes(tmp_path):
    parent, layer = tmp_path / "parent", tmp_path / "layer"
    parent.mkdir()
    (parent / "d2f").mkdir()
    write(parent / "d2f/child", "c")
    os.mknod(parent / "dev", 0o600 | 0o020000, os.makedev(1, 3))
    write(parent / "owner", "o")
    clone(parent, layer)
    subprocess.run(["rm", "-r", str(layer / "d2f")], check=True)
    write(layer / "d2f", "now a file")
    os.unlink(layer / "dev")
    os.mknod(layer / "dev", 0o600 | 0o020000, os.makedev(1, 5))
    st = os.lstat(parent / "owner")
    os.chown(layer / "owner", 4321, 8765)
    os.utime(layer / "owner", ns=(st.st_atime_ns, st.st_mtime_ns))
    # A directory replaced by a file: the file is modified, the old contents are not listed.
    assert n.changes(str(layer), str(parent)) == [("/d2f", M), ("/dev", M), ("/owner", M)]


def test_no_parent_lists_everything_added(tmp_path):
    layer = tmp_path / "layer"
    write(layer / "a/b/c", "c")
    write(layer / "z", "z")
    os.symlink("z", layer / "l")
    (layer / "empty").mkdir()
    assert n.changes(str(layer), None) == [
        ("/a", A),
        ("/a/b", A),
        ("/a/b/c", A),
        ("/empty", A),
        ("/l", A),
        ("/z", A),
    ]


def test_sorted_bytewise(tmp_path):
    layer = tmp_path / "layer"
    write(layer / "a/b", "x")
    for name in ["b", "a-b", "a.c", "B"]:
        write(layer / name, "x")
    assert [p for p, _ in n.changes(str(layer), None)] == ["/B", "/a", "/a-b", "/a.c", "/a/b", "/b"]


def test_mounts_are_not_entered(tmp_path):
    parent, layer, other = tmp_path / "parent", tmp_path / "layer", tmp_path / "other"
    (parent / "mnt").mkdir(parents=True)
    clone(parent, layer)
    write(other / "inside1", "1")
    write(other / "inside2", "2")
    subprocess.run(["mount", "--bind", str(other), str(layer / "mnt")], check=True)
    try:
        # Without the mount check both files would be added and /mnt modified.
        assert n.changes(str(layer), str(parent)) == []
        assert n.changes(str(layer), None) == [("/mnt", A)]
        assert n.tree_size(str(layer)) == (0, 2)
        # The files are there through the mount: starting at the mount itself shows them.
        assert n.changes(str(layer / "mnt"), str(parent / "mnt")) == [
            ("/inside1", A),
            ("/inside2", A),
        ]
        assert n.tree_size(str(layer / "mnt")) == (2, 3)
    finally:
        subprocess.run(["umount", str(layer / "mnt")], check=True)


def test_missing_roots_raise(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        n.changes(str(tmp_path / "nope"), None)
    assert e.value.filename == str(tmp_path / "nope")
    (tmp_path / "layer").mkdir()
    with pytest.raises(FileNotFoundError) as e:
        n.changes(str(tmp_path / "layer"), str(tmp_path / "nope"))
    assert e.value.filename == str(tmp_path / "nope")


def make_size_tree(root: Path) -> None:
    write(root / "h1", b"h" * 1000)
    os.link(root / "h1", root / "h2")
    (root / "sub").mkdir()
    os.link(root / "h1", root / "sub/h3")
    with open(root / "sparse", "wb") as f:
        f.truncate(10 << 20)
        f.seek(5 << 20)
        f.write(b"data")
    write(root / "sub/small", b"s" * 10)
    os.symlink("h1", root / "link")
    os.mkfifo(root / "fifo")


def test_tree_size_counts_hardlinks_once(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    make_size_tree(root)
    bytes_, inodes = n.tree_size(str(root))
    assert bytes_ == 1000 + (10 << 20) + 10
    # root, sub, h1 (3 names), sparse, small, link, fifo
    assert inodes == 7
    du = subprocess.run(["du", "-s", "-x", "--inodes", str(root)], capture_output=True, text=True,
                        check=True)
    assert int(du.stdout.split()[0]) == inodes
    # Apparent size as GNU du sees it, less what is not regular data (dirs and the symlink).
    du_b = subprocess.run(["du", "-s", "-x", "-b", str(root)], capture_output=True, text=True,
                          check=True)
    others = sum(os.lstat(p).st_size for p in (root, root / "sub", root / "link"))
    assert int(du_b.stdout.split()[0]) - others == bytes_


def test_paths_size(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    make_size_tree(root)
    os.symlink("/", root / "escape")
    outside = write(tmp_path / "outside", b"o" * 777)
    os.symlink(str(outside), root / "sub/abs")
    paths = ["/h1", "/h2", "/sub/h3", "/sparse", "/missing", "/sub", "/link", "/fifo",
             "/sub/small/notadir", "/", "/escape" + str(outside), "/sub/abs"]
    assert n.paths_size(str(root), paths) == 1000 + (10 << 20)
    assert n.paths_size(str(root), []) == 0
    assert n.paths_size(str(root), ["/sub/small", "/sub/small"]) == 10 + 10
    with pytest.raises(FileNotFoundError):
        n.paths_size(str(tmp_path / "nope"), ["/a"])


def test_a_new_hardlink_modifies_the_file_it_links(tmp_path):
    parent, layer = tmp_path / "parent", tmp_path / "layer"
    write(parent / "bin/sh", "sh")
    write(parent / "other", "o")
    clone(parent, layer)
    os.link(layer / "bin/sh", layer / "sh-link")
    # the file's link count moved: it is listed, so an export carries both names as one file
    assert n.changes(str(layer), str(parent)) == [("/bin", M), ("/bin/sh", M), ("/sh-link", A)]
