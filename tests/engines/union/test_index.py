"""The engine's per-directory index of the read-only branches: lookups and listings through
many branches, with whiteouts and opaque directories anywhere in the stack, stay right, and
so do changes through the union (which the index must never hide).

Up to 40 layers are checked against the kernel's overlayfs on the same layers; 1,000 branches
(more than overlayfs stacks) against a model of aufs's lookup rules written here."""

from __future__ import annotations

import errno
import itertools
import os
import random
import stat
from pathlib import Path

import pytest
from treeutil import describe
from unionutil import Stacks

from storagekit.engines import union

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="FUSE mounts need root")

# The namespace the generated layers draw from: 4 names per directory, 3 levels deep.
NAMES = ["a", "b", "c", "d"]
PATHS = ["/".join(p) for depth in (1, 2, 3) for p in itertools.product(NAMES, repeat=depth)]


def parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def random_layer(rng: random.Random, index: int, view: dict[str, str]) -> list[dict]:
    """One layer over the merged tree `view` (path -> "file" | "dir", updated): files,
    directories, opaque directories and whiteouts of names the layers below show, at random
    paths, as image layers have them (never a whiteout inside an opaque directory)."""
    kinds: dict[str, str] = {}  # path -> "dir" | "file" | "whiteout" | "opaque"

    def claim(path: str, kind: str) -> bool:
        allowed = ("dir",) if kind == "whiteout" else ("dir", "opaque")
        if any(kinds.get(p, "dir") not in allowed for p in parents(path)):
            return False
        if path in kinds or any(q.startswith(path + "/") for q in kinds):
            return False
        if kind == "whiteout" and path not in view:
            return False
        for p in parents(path):
            kinds.setdefault(p, "dir")
        kinds[path] = kind
        return True

    for _ in range(rng.randint(3, 9)):
        what = rng.choice(["file", "file", "dir", "whiteout", "opaque"])
        if what == "whiteout" and view:
            claim(rng.choice(sorted(view)), what)
        else:
            claim(rng.choice(PATHS), what)

    def drop(path: str, itself: bool) -> None:
        for q in [q for q in view if q.startswith(path + "/") or (itself and q == path)]:
            del view[q]

    entries = []
    for path in sorted(kinds, key=lambda p: p.split("/")):
        kind = kinds[path]
        if kind == "file":
            entries.append({"name": path, "data": f"{index}:{path}".encode()})
            drop(path, True)
        elif kind == "whiteout":
            head, _, name = path.rpartition("/")
            entries.append({"name": f"{head}/.wh.{name}".lstrip("/")})
            drop(path, True)
        else:
            entries.append({"name": path, "type": "dir"})
            if view.get(path) == "file":
                del view[path]
            if kind == "opaque":
                entries.append({"name": f"{path}/.wh..wh..opq"})
                drop(path, False)
    for path, kind in kinds.items():
        if kind != "whiteout":
            view[path] = "file" if kind == "file" else "dir"
    return entries


def make_layers(seed: int, count: int) -> list[list[dict]]:
    rng = random.Random(seed)
    view: dict[str, str] = {}
    return [random_layer(rng, i, view) for i in range(count)]


def kind(p: Path):
    try:
        return stat.S_IFMT(os.lstat(p).st_mode)
    except OSError as e:
        return errno.errorcode[e.errno]


def lookups(root: Path) -> dict[str, object]:
    """Every path of the namespace looked up afresh: its type or the errno name."""
    return {p: kind(root / p) for p in PATHS}


def change(rng: random.Random, root: Path) -> list:
    """Random changes through a mount, each followed by what the union shows right after."""
    out = []
    for step in range(60):
        path = rng.choice(PATHS)
        target = root / path
        what = rng.choice(["unlink", "rmdir", "mkdir", "write", "rename", "rename"])
        try:
            if what == "unlink":
                os.unlink(target)
            elif what == "rmdir":
                os.rmdir(target)
            elif what == "mkdir":
                os.mkdir(target)
            elif what == "write":
                with open(target, "ab") as f:
                    f.write(f"step {step}".encode())
            else:
                os.rename(target, root / rng.choice(PATHS))
            result = "ok"
        except OSError as e:
            result = errno.errorcode[e.errno]
        parent = target.parent
        listing = sorted(os.listdir(parent)) if parent.is_dir() else None
        out.append((what, path, result, kind(target), listing))
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_forty_layers_match_overlay(make_stacks, seed: int) -> None:
    stacks: Stacks = make_stacks(make_layers(seed, 40))
    u, o = stacks.union(), stacks.overlay()
    assert describe(u, times=False) == describe(o, times=False)
    assert lookups(u) == lookups(o)
    # the same changes on both: every result and every view right after it agree
    assert change(random.Random(seed + 100), u) == change(random.Random(seed + 100), o)
    assert describe(u, times=False) == describe(o, times=False)
    assert lookups(u) == lookups(o)


# ------------------------------------------------------------------------ 1,000 branches


def model_find(branches: list[Path], path: str):
    """aufs's lookup of a path through branches (top first): (type, branch, the branches a
    directory merges) or None."""
    found = (stat.S_IFDIR, 0, list(range(len(branches))))
    prefix = ""
    for name in filter(None, path.split("/")):
        layers, found, below = found[2], None, []
        for b in layers:
            d = branches[b] / prefix
            try:
                st = os.lstat(d / name)
            except FileNotFoundError:
                if os.path.lexists(d / f".wh.{name}"):
                    break
                continue
            if not stat.S_ISDIR(st.st_mode):
                if found is None:
                    found = (stat.S_IFMT(st.st_mode), b, [])
                break  # a non-directory hides everything below it
            if found is None:
                found = (stat.S_IFDIR, b, below)
            below.append(b)
            if os.path.lexists(d / name / ".wh..wh..opq") or os.path.lexists(d / f".wh.{name}"):
                break
        if found is None:
            return None
        prefix = f"{prefix}/{name}".lstrip("/")
    return found


def model_listing(branches: list[Path], path: str) -> list[str]:
    found = model_find(branches, path)
    assert found and found[0] == stat.S_IFDIR
    seen: set[str] = set()
    hidden: set[str] = set()
    for b in found[2]:
        whited = set()
        for name in os.listdir(branches[b] / path):
            if name.startswith(".wh."):
                if not name.startswith(".wh..wh."):
                    whited.add(name[4:])
            elif name not in hidden:
                seen.add(name)
        hidden |= whited
    return sorted(seen)


@pytest.fixture
def thousand(tmp_path: Path) -> list[Path]:
    """1,000 branches (top first) with whiteouts, opaque directories and type changes all
    through the stack."""
    rng = random.Random(7)
    branches = []
    for k in range(1000):
        b = tmp_path / "br" / f"b{k:04d}"
        branches.append(b)
        for d in ("", "a", "b", "a/x"):
            (b / d).mkdir(parents=True, exist_ok=True)
        (b / "a" / f"f{k}").write_bytes(str(k).encode())
        (b / "a" / "x" / f"x{k}").write_bytes(b"")
        (b / "shared").write_bytes(str(k).encode())
        for _ in range(3):
            d = rng.choice(["", "a", "b", "a/x"])
            name = rng.choice(["n0", "n1", "n2", "n3", "n4"])
            p = b / d / name
            if os.path.lexists(p) or os.path.lexists(b / d / f".wh.{name}"):
                continue
            what = rng.random()
            if what < 0.3:
                (b / d / f".wh.{name}").write_bytes(b"")
            elif what < 0.5:
                p.mkdir()
                (p / f"in{k}").write_bytes(b"")
                if rng.random() < 0.3:
                    (p / ".wh..wh..opq").write_bytes(b"")
            else:
                p.write_bytes(f"{k}".encode())
        if k % 97 == 3:
            (b / "a" / f".wh.f{k + 1}").write_bytes(b"")  # hides the branch below's file
        if k % 250 == 100:
            (b / "a" / "x" / ".wh..wh..opq").write_bytes(b"")
    return branches


def test_thousand_branches_lookups_and_listings(thousand: list[Path], tmp_path: Path) -> None:
    rw, mnt = tmp_path / "rw", tmp_path / "mnt"
    rw.mkdir()
    mnt.mkdir()
    union.start(mnt, [rw, *thousand])
    try:
        names = ["a", "b", "a/x", "shared", "a/f0", "a/f999", "a/f500", "a/missing", "nothing/here"]
        names += [f"{d}/n{i}".lstrip("/") for d in ("", "a", "b", "a/x") for i in range(5)]
        names += [f"a/f{k + 1}" for k in range(1000) if k % 97 == 3]
        for name in names:
            found = model_find(thousand, name)
            assert kind(mnt / name) == (found[0] if found else "ENOENT"), name
            if found and found[0] == stat.S_IFREG:
                assert (mnt / name).read_bytes() == (thousand[found[1]] / name).read_bytes()
        dirs = [""] + [n for n in names if (mnt / n).is_dir() and not (mnt / n).is_symlink()]
        for d in dirs:
            assert sorted(os.listdir(mnt / d)) == model_listing(thousand, d), d
        # changes through the union show at once, in lookups and listings
        before = sorted(os.listdir(mnt / "a"))
        os.unlink(mnt / "a/f0")  # the bottom branch's file: a whiteout in rw
        (mnt / "a/new").write_bytes(b"new")
        os.rename(mnt / "a/f999", mnt / "a/f999.moved")  # the top one's
        assert kind(mnt / "a/f0") == "ENOENT" and (rw / "a/.wh.f0").exists()
        assert (mnt / "a/f999.moved").read_bytes() == b"999"
        assert sorted(os.listdir(mnt / "a")) == sorted(
            set(before) - {"f0", "f999"} | {"new", "f999.moved"}
        )
        (mnt / "a/f0").write_bytes(b"again")
        assert (mnt / "a/f0").read_bytes() == b"again"
        # a directory merged from many branches moves as a whole
        x = sorted(os.listdir(mnt / "a/x"))
        os.rename(mnt / "a/x", mnt / "b/x2")
        assert sorted(os.listdir(mnt / "b/x2")) == x
        assert kind(mnt / "a/x") == "ENOENT" and "x" not in os.listdir(mnt / "a")
        os.mkdir(mnt / "a/x")
        assert os.listdir(mnt / "a/x") == []
    finally:
        union.stop(mnt)


def test_index_cache_stays_within_its_bounds(make_stacks, monkeypatch) -> None:
    layers = []
    for i in range(4):
        layer = []
        for d in range(30):
            layer.append({"name": f"d{d}", "type": "dir"})
            layer += [{"name": f"d{d}/f{i}-{j}", "data": b"x"} for j in range(10)]
            if i == 2 and d % 5 == 0:
                layer.append({"name": f"d{d}/.wh.f0-0"})
        layers.append(layer)
    stacks: Stacks = make_stacks(layers)
    # descriptors of at most 8 directories and 64 names: nearly every listing and lookup
    # finds its index evicted and builds it anew
    monkeypatch.setenv("STORAGEKIT_UNION_INDEX_FDS", "8")
    monkeypatch.setenv("STORAGEKIT_UNION_INDEX_NAMES", "64")
    u = stacks.union()
    monkeypatch.delenv("STORAGEKIT_UNION_INDEX_FDS")
    monkeypatch.delenv("STORAGEKIT_UNION_INDEX_NAMES")
    o = stacks.overlay()
    (pid,) = union.daemon_pids(u)
    baseline = len(os.listdir(f"/proc/{pid}/fd"))
    expect = describe(o, times=False)
    for _ in range(2):
        assert describe(u, times=False) == expect
        for d in range(30):
            assert sorted(os.listdir(u / f"d{d}")) == sorted(os.listdir(o / f"d{d}"))
            assert kind(u / f"d{d}/f0-0") == kind(o / f"d{d}/f0-0")
    # 30 directories in 4 branches would keep 120 descriptors open without the bound
    assert len(os.listdir(f"/proc/{pid}/fd")) <= baseline + 8
