"""What a pool directory holds.

    DIR/pool.json      the pool's configuration: data block size and features (the metadata
                       does not store features, as a dm table line carries them)
    DIR/metadata       dm-thin metadata (4 KiB blocks)
    DIR/data           the data device (a sparse file)
    DIR/devices.json   the size of each thin device ({"<id>": bytes}); the pool has none
    DIR/dev/           while a daemon runs: its FUSE mount, one file per active device
    DIR/control.sock   while a daemon runs: its control socket
    DIR/daemon.pid     the daemon's pid, flock-ed by the daemon for as long as it lives
    DIR/daemon.log     what daemons had to say (mount failures, cleanup of dead ones)
    DIR/lock           flock-ed by a client that starts a daemon or opens the pool itself
"""

from __future__ import annotations

import json
import os
from collections import namedtuple
from pathlib import Path

from ...fsutil import atomic_write
from .errors import PoolNotFound

# Named tuples, not dataclasses: the daemon imports this module as it starts (with every
# device activation), and dataclasses brings inspect and ast (~10 ms).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FEATURES = ("skip_block_zeroing", "ignore_discard", "no_discard_passdown", "error_if_no_space")
CONFIG_VERSION = 1
DEFAULT_NO_SPACE_TIMEOUT = 60.0


class PoolConfig(namedtuple("PoolConfig", "data_block_size low_water_mark features "
                            "no_space_timeout",
                            defaults=(0, (), DEFAULT_NO_SPACE_TIMEOUT))):
    data_block_size: int  # sectors
    low_water_mark: int
    features: tuple[str, ...]
    # Seconds a write needing space waits for it (queue_if_no_space), counted from when the
    # pool ran out: the kernel's dm_thin_pool no_space_timeout.
    no_space_timeout: float
    __slots__ = ()

    def open_options(self) -> dict[str, Any]:
        """Keyword arguments for ThinPool.open."""
        opts: dict[str, Any] = {f: f in self.features for f in FEATURES}
        opts["low_water_mark"] = self.low_water_mark
        opts["no_space_timeout"] = self.no_space_timeout
        return opts

    def as_dict(self) -> dict[str, Any]:
        return {"version": CONFIG_VERSION, "data_block_size": self.data_block_size,
                "low_water_mark": self.low_water_mark, "features": list(self.features),
                "no_space_timeout": self.no_space_timeout}


class PoolDir(namedtuple("PoolDir", "root")):
    root: Path
    __slots__ = ()

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> PoolDir:
        """The pool in an existing directory; PoolNotFound when there is none."""
        root = Path(os.path.realpath(path))
        pd = cls(root)
        if not pd.config_file.is_file():
            raise PoolNotFound(
                f"{root} is not a thin pool (no pool.json); "
                f"create one with 'storagekit thin create-pool {root}'")
        return pd

    @property
    def config_file(self) -> Path:
        return self.root / "pool.json"

    @property
    def metadata(self) -> Path:
        return self.root / "metadata"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sizes_file(self) -> Path:
        return self.root / "devices.json"

    @property
    def mountpoint(self) -> Path:
        return self.root / "dev"

    @property
    def socket(self) -> Path:
        return self.root / "control.sock"

    @property
    def pidfile(self) -> Path:
        return self.root / "daemon.pid"

    @property
    def log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def lockfile(self) -> Path:
        return self.root / "lock"

    def device_file(self, dev_id: int) -> Path:
        return self.mountpoint / str(dev_id)

    # ------------------------------------------------------------------ configuration

    def read_config(self) -> PoolConfig:
        raw = json.loads(self.config_file.read_text())
        return PoolConfig(int(raw["data_block_size"]), int(raw.get("low_water_mark", 0)),
                          tuple(raw.get("features", ())),
                          float(raw.get("no_space_timeout", DEFAULT_NO_SPACE_TIMEOUT)))

    def write_config(self, config: PoolConfig) -> None:
        write_json(self.config_file, config.as_dict())

    # ------------------------------------------------------------------ device sizes

    def read_sizes(self) -> dict[int, int]:
        try:
            raw = json.loads(self.sizes_file.read_text())
        except FileNotFoundError:
            return {}
        return {int(k): int(v) for k, v in raw.items()}

    def write_sizes(self, sizes: dict[int, int]) -> None:
        write_json(self.sizes_file, {str(k): v for k, v in sorted(sizes.items())})


def write_json(path: Path, data: Any) -> None:
    """Replace path atomically and durably (a crash leaves the old or the new content)."""
    atomic_write(path, json.dumps(data, indent=1) + "\n")
