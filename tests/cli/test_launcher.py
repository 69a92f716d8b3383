"""The installed `storagekit` command: the CLI started without site (storagekit/launcher.py)."""

from __future__ import annotations

import glob
import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
from cliutil import command

from storagekit import bootpath, registry

LAUNCHER = Path(__file__).resolve().parents[2] / "storagekit" / "launcher.py"


def _in_bare_python(code: str, cwd: Path) -> dict:
    """Run code under `python -S` with the launcher loaded as `launcher`; code prints JSON."""
    prelude = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('launcher', {str(LAUNCHER)!r})\n"
        "launcher = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(launcher)\n"
    )
    proc = subprocess.run([sys.executable, "-S", "-c", prelude + code], cwd=cwd,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_the_command_is_the_launcher_under_dash_s(tmp_path):
    with open(command()) as f:
        shebang = f.readline().split()
    assert shebang[1:] == ["-S"]
    assert os.path.realpath(shebang[0].removeprefix("#!")) == os.path.realpath(sys.executable)
    proc = subprocess.run([command(), "--root", str(tmp_path / "root"), "--json", "drivers"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert {"vfs", "overlay", "aufs", "devicemapper"} <= {d["name"] for d in
                                                          json.loads(proc.stdout)}


def test_site_dir_adds_paths_and_runs_only_its_own_hooks(tmp_path):
    sitedir = tmp_path / "site-packages"
    (sitedir / "pkgdir").mkdir(parents=True)
    (sitedir / "other.pth").write_text(
        "# a comment\npkgdir\nmissing-dir\n"
        f"import os; open({str(tmp_path / 'other-hook-ran')!r}, 'w').close()\n")
    (sitedir / "__editable__.storagekit-9.9.pth").write_text(
        "import sys; sys.own_hook_ran = True\n")
    out = _in_bare_python(
        f"launcher.add_site_dir({str(sitedir)!r})\n"
        "print(json.dumps({'path': sys.path, 'own': getattr(sys, 'own_hook_ran', False)}))\n",
        tmp_path)
    assert str(sitedir) in out["path"] and str(sitedir / "pkgdir") in out["path"]
    assert str(sitedir / "missing-dir") not in out["path"]
    assert out["own"] is True
    assert not (tmp_path / "other-hook-ran").exists()


def test_falls_back_to_site_when_the_package_is_not_found(tmp_path):
    """With its own hook not recognised, an editable install is not importable from plain
    paths: the launcher must then run site in full, and still work."""
    out = _in_bare_python(
        "import builtins\n"
        "launcher.OWN_PTH = 'no-such-prefix'\n"
        "launcher.exit_now = lambda code: print(json.dumps(\n"
        "    {'code': code, 'site_ran': hasattr(builtins, 'quit')}))\n"
        f"sys.argv = ['storagekit', '--root', {str(tmp_path / 'root')!r}, 'drivers']\n"
        "launcher.run()\n",
        tmp_path)
    assert out["code"] == 0
    editable = any(glob.glob(os.path.join(d, "__editable__.storagekit-*.pth"))
                   for d in site.getsitepackages())
    assert out["site_ran"] is editable


def test_output_and_status_survive_the_fast_exit(tmp_path):
    root = str(tmp_path / "root")
    proc = subprocess.run([command(), "--root", root, "--driver", "vfs", "--json", "layer",
                           "create", "base"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = subprocess.run([command(), "--root", root, "--json", "layer", "ls"],
                           capture_output=True, text=True, check=True).stdout
    assert [layer["id"] for layer in json.loads(lines)] == ["base"]
    proc = subprocess.run([command(), "--root", root, "layer", "rm", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "nope" in proc.stderr
    proc = subprocess.run([command(), "--root", root, "layer", "ls"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("ID")


def test_source_finder_imports_only_the_mapped_packages(tmp_path):
    """An editable install's command finds storagekit's packages in the source tree, a
    subpackage in a directory of its own included (drivers/ is storagekit.drivers), and
    nothing else of the tree."""
    src = tmp_path / "src"
    for pkg, text in (("toppkg", "WHERE = 'top'"), ("extra", "WHERE = 'extra'"),
                      ("unmapped", "")):
        (src / pkg).mkdir(parents=True)
        (src / pkg / "__init__.py").write_text(text + "\n")
    (src / "toppkg" / "inner.py").write_text("WHERE = 'inner'\n")
    out = _in_bare_python(
        f"launcher.SOURCE_PACKAGES = {{'toppkg': {str(src / 'toppkg')!r},\n"
        f"                             'toppkg.extra': {str(src / 'extra')!r}}}\n"
        "sys.meta_path.append(launcher.SourceFinder)\n"
        "import toppkg, toppkg.extra, toppkg.inner\n"
        "try:\n"
        "    import unmapped\n"
        "    found = True\n"
        "except ModuleNotFoundError:\n"
        "    found = False\n"
        "print(json.dumps({'where': [toppkg.WHERE, toppkg.extra.WHERE, toppkg.inner.WHERE],\n"
        "                  'file': toppkg.extra.__file__, 'unmapped': found}))\n",
        tmp_path)
    assert out["where"] == ["top", "extra", "inner"]
    assert out["file"] == str(src / "extra" / "__init__.py")
    assert out["unmapped"] is False


def test_the_command_knows_the_source_tree_of_an_editable_install():
    repo = LAUNCHER.parents[1]
    with open(command()) as f:
        lines = [line for line in f if line.startswith(("SOURCE_PACKAGES =",
                                                        "SOURCE_PACKAGES:"))]
    assert len(lines) == 1
    editable = any(glob.glob(os.path.join(d, "__editable__.storagekit-*.pth"))
                   for d in site.getsitepackages())
    if editable:
        mapping = eval(lines[0].split("=", 1)[1])  # a dict literal setup.py wrote
        assert mapping == {"storagekit": str(repo / "storagekit"),
                           "storagekit.drivers": str(repo / "drivers")}
    else:
        assert lines[0].rstrip() == "SOURCE_PACKAGES: dict[str, str] = {}"


@pytest.mark.parametrize("driver", ["overlay", "vfs", "aufs", "btrfs"])
def test_a_boot_through_the_command_imports_no_pathlib_or_threading(tmp_path, busybox_tar,
                                                                      driver):
    """What a container boot through the CLI must not pay for (storagekit/bootpath.py): the
    installed command itself runs, in a bare interpreter as its shebang says, and reports its
    modules. (devicemapper's thin client is outside the budget.)"""
    ok, reason = registry.driver_class(driver).probe(tmp_path)
    if not ok:
        pytest.skip(f"{driver}: {reason}")
    root = str(tmp_path / "root")
    subprocess.run([command(), "--root", root, "--driver", driver, "image", "import",
                    str(busybox_tar), "--name", "busybox"], check=True, capture_output=True)
    code = (
        "import json, sys\n"
        f"sys.argv = [{command()!r}, '--root', {root!r}, 'run', '--rm', 'busybox', '/bin/true']\n"
        f"with open({command()!r}) as f:\n"
        "    launcher = {'__name__': 'launcher'}\n"
        "    exec(compile(f.read(), 'storagekit', 'exec'), launcher)\n"
        "launcher['exit_now'] = lambda code: print(json.dumps([code, sorted(sys.modules)]))\n"
        "launcher['run']()\n"
    )
    try:
        proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        status, modules = json.loads(proc.stdout.splitlines()[-1])
        assert status == 0
        assert {"storagekit.runtime", f"storagekit.drivers.{driver}"} <= set(modules)
        # the rule of storagekit/bootpath.py, both ways
        assert not set(modules) & bootpath.FORBIDDEN, sorted(set(modules) & bootpath.FORBIDDEN)
        ours = {m for m in modules if m.startswith("storagekit") and not m.startswith(
            ("storagekit._native", "storagekit._archive", "storagekit._fuse"))}
        assert ours <= bootpath.BOOT_PATH, f"on the boot path but not in bootpath.py: " \
            f"{sorted(ours - bootpath.BOOT_PATH)}"
        subprocess.run([command(), "--root", root, "image", "rm", "busybox"], check=True,
                       capture_output=True)
    finally:
        # what a driver keeps between commands goes (btrfs: its loopback, once idle), also
        # when the boot failed
        subprocess.run([command(), "--root", root, "prune"], capture_output=True)
