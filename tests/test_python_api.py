"""The Python API: the public names, their reference (docs/api.md), and the README's example
of a tool embedding storagekit, run for real on every driver."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import storagekit
from storagekit import apidoc, registry

REPO = Path(__file__).resolve().parent.parent


def test_public_names_resolve():
    for name in storagekit.__all__:
        assert getattr(storagekit, name) is not None, name
    assert storagekit.Store.__module__ == "storagekit.store"
    assert issubclass(storagekit.LayerNotFound, storagekit.StorageError)
    assert set(storagekit.__all__) <= set(dir(storagekit))
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        storagekit.nosuch  # noqa: B018


def test_import_storagekit_stays_cheap():
    """The names are imported on first use: `import storagekit` alone (the first thing every
    container boot does) loads none of the modules behind them."""
    code = ("import sys, storagekit; print(sorted(m for m in sys.modules "
            "if m.startswith('storagekit')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert out.strip() == "['storagekit']"


def test_readable_reprs():
    change = storagekit.Change("/etc/passwd", storagekit.ChangeKind.MODIFY)
    assert repr(change) == "Change(path='/etc/passwd', kind=C)"
    assert str(change) == "C /etc/passwd"
    assert repr(storagekit.PARENT) == "PARENT"
    assert storagekit.ChangeKind.DELETE == 2  # --json keeps the numbers


def test_every_public_method_is_documented():
    assert apidoc.undocumented() == []


def test_api_reference_is_current():
    committed = (REPO / "docs/api.md").read_text()
    assert committed == apidoc.render(), (
        "docs/api.md is stale: run python3 -m storagekit.apidoc > docs/api.md")


def _readme_example() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- api-example -->\n```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its API example"
    return match.group(1)


@pytest.mark.parametrize("driver", sorted(registry.available()))
def test_readme_example_runs(driver, tmp_path, busybox_tar, capsys):
    root = tmp_path / "store"
    scope = {"ROOT": str(root), "DRIVER": driver, "BUSYBOX_TAR": str(busybox_tar)}
    exec(compile(_readme_example(), "README.md", "exec"), scope)  # noqa: S102
    assert capsys.readouterr().out.strip() == "['A /hello.txt']"
    with tarfile.open(fileobj=io.BytesIO(scope["layer_tar"])) as tar:
        member = tar.getmember("hello.txt")
        assert tar.extractfile(member).read() == b"hello\n"
    with storagekit.Store(root) as store:
        layer = store.layer("work")
        assert layer.kind == "committed"
        path = store.get("work")
        try:
            assert Path(path, "hello.txt").read_text() == "hello\n"
            with pytest.raises(OSError):  # committed: read-only for real
                Path(path, "other.txt").write_text("x")
        finally:
            store.put("work")
        store.remove("work")
        storagekit.Images(store).remove("busybox")
        assert store.layers() == []
        store.driver.cleanup()  # what a driver keeps between uses (btrfs: its loopback)
