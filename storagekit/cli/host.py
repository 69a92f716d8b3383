"""The host's commands: `drivers`, `info`, `demo`, `prune` and `version`."""

from __future__ import annotations

from argparse import Namespace

from .command import command, open_store
from .output import emit, human_size, table


@command("drivers", "registered drivers and whether this host supports them")
def drivers(args: Namespace) -> int:
    from .. import registry
    from ..store import default_root

    support = registry.supports(args.root or default_root())
    data = [
        {"name": s.name, "supported": s.supported, "reason": s.reason, "priority": s.priority}
        for s in support
    ]
    emit(args, data, lambda: table(
        [(s.name, "yes" if s.supported else "no", s.reason) for s in support],
        ("DRIVER", "SUPPORTED", "WHY"),
    ))
    return 0


@command("info", "root, driver, backing filesystem and block device")
def info(args: Namespace) -> int:
    from ..hostinfo import block_device

    with open_store(args) as store:
        dev = block_device(store.root)
        status = store.status()
        layers = store.layers()
        data = {
            "root": str(store.root),
            "driver": store.driver_name,
            "backing_filesystem": dev["filesystem"],
            "block_device": dev,
            "layers": len(layers),
            "driver_status": dict(status),
        }

        def human() -> None:
            print(f"Root:               {store.root}")
            print(f"Driver:             {store.driver_name}")
            print(f"Backing filesystem: {dev['filesystem']} (mounted on {dev['mount_point']})")
            if dev.get("device"):
                print(f"Block device:       {dev['device']} (disk {dev['disk']})")
                print(f"  Model:            {dev['model']}")
                print(f"  Size:             {human_size(dev['size_bytes'])}")
                print(f"  Rotational:       {'yes' if dev['rotational'] else 'no'}")
                print(f"  I/O scheduler:    {dev['scheduler']}")
                if dev.get("loop_backing_file"):
                    print(f"  Loop backing:     {dev['loop_backing_file']}")
            else:
                print(f"Block device:       none ({dev['reason']}; {dev['device_number']})")
            print(f"Layers:             {len(layers)}")
            print("Driver status:")
            for key, value in status:
                print(f"  {key}: {value}")

        emit(args, data, human)
    return 0


@command("demo", "boot busybox on every driver this host supports and compare the drivers")
def demo(args: Namespace) -> int:
    from ..demo import run_demo

    return run_demo(args)


@command("prune", "remove what killed or failed commands left behind: half-made layers, "
         "layers of interrupted imports, temporary files, records of dead containers")
def prune(args: Namespace) -> int:
    from ..runtime import Containers

    with open_store(args) as store:
        containers = Containers(store).reap()
        removed = store.prune()
        emit(args, {"containers": containers, "removed": removed},
             lambda: [print(item) for item in [*(f"container {c}" for c in containers),
                                               *removed]])
    return 0


@command("version", "storagekit's version, and the Python and kernel it runs on")
def version(args: Namespace) -> int:
    import platform

    from .. import __version__

    data = {"version": __version__, "python": platform.python_version(),
            "kernel": platform.release(), "native": _native_built()}
    emit(args, data, lambda: [print(f"{k.capitalize() + ':':<9} {v}") for k, v in data.items()])
    return 0


def _native_built() -> str:
    """Where the compiled core was loaded from (a missing build shows here first)."""
    try:
        from .. import _native
    except ImportError as e:
        return f"missing ({e})"
    return _native.__file__ or "built in"


COMMANDS = (drivers, info, demo, prune, version)
