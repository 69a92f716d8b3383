"""Paths cross into the native core the way they cross into os functions: as str (a name that
is not UTF-8 as surrogate escapes), bytes or os.PathLike; they come back, in results and in
OSError.filename, the way os.fsdecode gives them. Every binding that takes a path is tried
with all three forms and a name whose bytes are not UTF-8."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from storagekit import _native as n

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (overlay whiteouts)")

RAW = b"odd-\xff\xe9"      # not UTF-8
ODD = os.fsdecode(RAW)     # "odd-\udcff\udce9"

FORMS: dict[str, Callable[[Path], object]] = {
    "str": str,
    "bytes": os.fsencode,
    "pathlike": lambda p: p,
}


@pytest.fixture(params=sorted(FORMS))
def form(request) -> Callable[[Path], object]:
    return FORMS[request.param]


def name_form(form: Callable[[Path], object], name: str) -> object:
    """A bare name in the same form as the paths of this run."""
    return form(Path(name))


def raw_names(d: Path) -> set[bytes]:
    return set(os.listdir(os.fsencode(d)))


def test_whiteouts_in_every_form(tmp_path, form):
    oci, overlay = tmp_path / ODD, tmp_path / "overlay"
    oci.mkdir()
    overlay.mkdir()
    n.make_whiteout(form(oci), name_form(form, ODD), "oci")
    assert raw_names(oci) == {b".wh." + RAW}
    assert n.is_whiteout(form(oci), name_form(form, ".wh." + ODD), "oci")
    (overlay / ODD).write_text("replaced by the whiteout")
    n.make_whiteout(form(overlay), name_form(form, ODD), "overlay")
    assert stat.S_ISCHR(os.lstat(os.path.join(os.fsencode(overlay), RAW)).st_mode)
    assert n.is_whiteout(form(overlay), name_form(form, ODD), "overlay")
    n.set_opaque(form(oci), "oci")
    assert n.is_opaque(form(oci), "oci")
    assert n.convert_whiteouts(form(oci), "oci", "overlay") == 2  # the whiteout, the marker
    assert n.is_opaque(form(oci), "overlay")
    assert n.is_whiteout(form(oci), name_form(form, ODD), "overlay")


def test_whiteout_target_takes_and_gives_os_names():
    assert n.whiteout_target(b".wh." + RAW) == ODD
    assert n.whiteout_target(".wh." + ODD) == ODD
    assert n.whiteout_target(Path(".wh." + ODD)) == ODD


def test_remove_tree_in_every_form(tmp_path, form):
    top = tmp_path / ODD
    (top / ODD).mkdir(parents=True)
    (top / ODD / ODD).write_text("x")
    assert n.remove_tree(form(top)) is True
    assert raw_names(tmp_path) == set()
    assert n.remove_tree(form(top)) is False


def odd_layer_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as tar:
        info = tarfile.TarInfo(ODD)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        data = b"content"
        info = tarfile.TarInfo(f"{ODD}/{ODD}")
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_apply_and_export_in_every_form(tmp_path, form):
    root = tmp_path / ODD
    root.mkdir()
    r, w = os.pipe()
    os.write(w, odd_layer_tar())
    os.close(w)
    try:
        n.apply_tar(r, form(root))
    finally:
        os.close(r)
    assert (root / ODD / ODD).read_bytes() == b"content"

    changes = n.changes(form(root), None)
    assert changes == [(f"/{ODD}", n.CHANGE_ADD), (f"/{ODD}/{ODD}", n.CHANGE_ADD)]
    assert n.paths_size(form(root), [p for p, _ in changes]) == len(b"content")
    as_bytes = [(os.fsencode(p), kind) for p, kind in changes]
    for given in (None, changes, as_bytes):
        out = tmp_path / "layer.tar"
        with open(out, "wb") as f:
            n.export_tar(form(root), f.fileno(), changes=given)
        with tarfile.open(out, encoding="utf-8", errors="surrogateescape") as tar:
            names = sorted(m.name.rstrip("/") for m in tar.getmembers())
        assert names == [ODD, f"{ODD}/{ODD}"]


def test_export_refuses_changes_that_are_not_pairs(tmp_path):
    with open(tmp_path / "out.tar", "wb") as f:
        for bad in ([f"/{ODD}"], [(f"/{ODD}",)], [(f"/{ODD}", "add")]):
            with pytest.raises(TypeError, match="pair"):
                n.export_tar(tmp_path, f.fileno(), changes=bad)


def test_copy_and_sizes_in_every_form(tmp_path, form):
    src = tmp_path / ODD
    (src / ODD).mkdir(parents=True)
    (src / ODD / ODD).write_text("12345")
    dst = tmp_path / "copy"
    assert n.copy_tree(form(src), form(dst))["files"] == 1
    assert raw_names(dst / ODD) == {RAW}
    assert n.tree_size(form(dst)) == (5, 3)
    assert n.copy_entry(form(src / ODD / ODD), form(tmp_path / "one")) in (
        "reflink", "copy_file_range", "readwrite")


@pytest.mark.parametrize("call", [
    lambda missing: n.copy_entry(missing, missing + b"-copy"),
    lambda missing: n.remove_tree(missing + b"/child"),
    lambda missing: n.is_opaque(missing, "oci"),
    lambda missing: n.make_whiteout(missing, b"x", "oci"),
    lambda missing: n.tree_size(missing),
    lambda missing: n.apply_tar(0, missing),
    lambda missing: n.export_tar(missing, 1),
    lambda missing: n.ThinPool.open(missing, missing + b"-data"),
])
def test_errors_name_a_non_utf8_path(tmp_path, call):
    missing = os.path.join(os.fsencode(tmp_path), RAW)
    with pytest.raises(FileNotFoundError) as e:
        call(missing)
    assert e.value.filename == os.fsdecode(missing)


def test_path_lists_refuse_a_single_string(tmp_path):
    with pytest.raises(TypeError, match="single string"):
        n.fsmount_overlay(tmp_path, str(tmp_path))
    with pytest.raises(TypeError, match="single string"):
        n.spawn_container(str(tmp_path), "true", [])


def test_a_nul_in_a_path_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="null"):
        n.remove_tree(str(tmp_path) + "/a\0b")
    with pytest.raises(ValueError, match="null"):
        n.apply_tar(0, str(tmp_path) + "\0")


def test_an_archive_error_names_a_non_utf8_entry(tmp_path):
    """The message says which entry, its odd bytes escaped; the error stays an ArchiveError
    (it used to turn into a UnicodeDecodeError)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as tar:
        for name in (ODD, f"{ODD}/below"):  # a file, then an entry below it
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    r, w = os.pipe()
    os.write(w, buf.getvalue())
    os.close(w)
    try:
        with pytest.raises(n.ArchiveError) as e:
            n.apply_tar(r, tmp_path)
    finally:
        os.close(r)
    assert "odd-\\xff\\xe9" in str(e.value) and "not a directory" in str(e.value)
