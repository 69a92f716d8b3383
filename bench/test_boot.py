"""Container boot: `run --rm IMAGE /bin/true` per driver, in-process and through the CLI,
against `ctr run --rm` with runc on containerd's overlayfs snapshotter, same image, same run.

Group "container boot": every entry's ratio is against ctr run (baseline/this > 1 = faster).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from containerd_util import running_containerd

from storagekit import registry
from storagekit.image import Images
from storagekit.runtime import Containers, RunSpec
from storagekit.store import Store

REPO = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("STORAGEKIT_BENCH_ROUNDS", "20"))
DRIVERS = sorted(registry.available())


@pytest.fixture(scope="module")
def busybox(bench_dir: Path) -> Path:
    out = bench_dir / "busybox.tar"
    subprocess.run([str(REPO / "scripts/build-busybox-image.sh"), str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def stores(bench_dir: Path, busybox: Path):
    made = {}
    for name in DRIVERS:
        ok, _ = registry.driver_class(name).probe(bench_dir)
        if ok:
            store = Store(bench_dir / f"boot-{name}", name)
            Images(store).import_image(busybox, name="busybox")
            made[name] = store
    yield made
    for store in made.values():
        store.driver.cleanup()
        store.close()


def _store(stores, driver):
    if driver not in stores:
        pytest.skip(f"{driver} is not supported here")
    return stores[driver]


@pytest.mark.parametrize("driver", DRIVERS)
def test_boot_in_process(benchmark, stores, driver):
    benchmark.group = "container boot"
    containers = Containers(_store(stores, driver))
    null = os.open(os.devnull, os.O_WRONLY)
    spec = RunSpec("busybox", ["/bin/true"], rm=True, stdout=null)
    containers.run(spec)  # warm
    benchmark.pedantic(lambda: containers.run(spec), rounds=ROUNDS, iterations=1)
    os.close(null)


def _installed_command() -> str:
    """The `storagekit` command pip installed beside this interpreter's scripts."""
    path = Path(sysconfig.get_path("scripts")) / "storagekit"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: install storagekit (pip install -e .)")
    return str(path)


@pytest.mark.parametrize("how", ["command", "python -m"])
@pytest.mark.parametrize("driver", DRIVERS)
def test_boot_cli(benchmark, stores, driver, how):
    """The CLI as users run it: the installed `storagekit` command, and `python -m
    storagekit` (which pays for the interpreter's site initialisation). Both with compiled
    bytecode, as pip leaves it (PYTHONDONTWRITEBYTECODE, if the environment sets it, would
    recompile every module on every call)."""
    benchmark.group = "container boot"
    store = _store(stores, driver)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "storagekit"),
                    str(REPO / "drivers")], check=True, env=env)
    launch = [_installed_command()] if how == "command" else [sys.executable, "-m", "storagekit"]
    cmd = [*launch, "--root", str(store.root), "run", "--rm", "busybox", "/bin/true"]
    subprocess.run(cmd, check=True, env=env)
    benchmark.pedantic(lambda: subprocess.run(cmd, check=True, env=env), rounds=ROUNDS,
                       iterations=1)


def test_boot_ctr_run(benchmark, stores, busybox, bench_dir):
    benchmark.group = "container boot"
    benchmark.extra_info["baseline"] = True
    store = next(iter(stores.values()))
    oci = bench_dir / "busybox-oci.tar"
    Images(store).export("busybox", oci)
    names = (f"b{i}" for i in itertools.count())
    with running_containerd() as ctrd:
        ctrd.ctr("images", "import", str(oci))
        ref = "docker.io/library/busybox:latest"
        ctrd.ctr("run", "--rm", ref, "warm", "/bin/true")
        benchmark.pedantic(lambda: ctrd.ctr("run", "--rm", ref, next(names), "/bin/true"),
                           rounds=ROUNDS, iterations=1)
