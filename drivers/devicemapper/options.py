"""The devicemapper driver's options, named and defaulted as Docker's were.

Unknown or malformed options are errors at start-up, with the option named.
"""

from __future__ import annotations

import shlex

from storagekit.errors import InvalidArgument
from storagekit.options import parse_bool, parse_size

GIB = 1 << 30
DEFAULTS = {
    "dm.basesize": "10G",
    "dm.loopdatasize": "100G",
    "dm.loopmetadatasize": "",  # "": sized from the data (see thin.default_metadata_size)
    "dm.fs": "ext4",
    "dm.mkfsarg": "",
    "dm.mountopt": "",
    "dm.blocksize": "64K",
    "dm.min_free_space": "10%",
    "dm.thinpooldev": "",
    "dm.use_deferred_removal": "false",
    "dm.use_deferred_deletion": "false",
}
HELP = {
    "dm.basesize": "size of the base thin device every layer snapshots (default 10G)",
    "dm.loopdatasize": "size of the sparse data file of the loop-lvm style pool (default 100G)",
    "dm.loopmetadatasize": "size of the pool's metadata file (default: sized from the data)",
    "dm.fs": "filesystem of the base device: ext4 (default) or xfs",
    "dm.mkfsarg": "extra mkfs arguments (shell words)",
    "dm.mountopt": "extra mount options (comma separated)",
    "dm.blocksize": "the pool's data block size, 64K to 1G in 64K steps (default 64K)",
    "dm.min_free_space": "refuse new devices when less than this share of the pool is free "
    "(default 10%)",
    "dm.thinpooldev": "use this existing pool instead of making one: a storagekit thin pool "
    "directory, or with kernel device-mapper a /dev/mapper pool",
    "dm.use_deferred_removal": "deactivate devices that are still busy later instead of failing",
    "dm.use_deferred_deletion": "delete devices that are still busy later instead of failing",
}
def parse_bytes(key: str, text: str) -> int:
    value = parse_size(text, key)
    if value <= 0:
        raise InvalidArgument(f"{key}={text!r}: must be positive")
    return value


class Options:
    """The dm.* options, parsed. A plain class: dataclasses would cost every CLI call on
    this driver the import of inspect and ast."""

    def __init__(self, *, base_size: int, data_size: int, metadata_size: int | None, fs: str,
                 mkfs_args: list[str], mount_options: list[str], block_size: int,
                 min_free_percent: int, thin_pool_dev: str, deferred_removal: bool,
                 deferred_deletion: bool, given: dict[str, str] | None = None) -> None:
        self.base_size = base_size
        self.data_size = data_size
        self.metadata_size = metadata_size
        self.fs = fs
        self.mkfs_args = mkfs_args
        self.mount_options = mount_options
        self.block_size = block_size
        self.min_free_percent = min_free_percent
        self.thin_pool_dev = thin_pool_dev
        self.deferred_removal = deferred_removal
        self.deferred_deletion = deferred_deletion
        self.given = dict(given or {})

    def __repr__(self) -> str:
        return f"Options({vars(self)!r})"


def parse(options: dict[str, str]) -> Options:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise InvalidArgument(
            f"unknown devicemapper option {unknown[0]!r} (known: {', '.join(sorted(DEFAULTS))})"
        )
    o = DEFAULTS | dict(options)
    fs = o["dm.fs"]
    if fs not in ("ext4", "xfs"):
        raise InvalidArgument(f"dm.fs={fs!r}: only ext4 and xfs are supported")
    block = parse_bytes("dm.blocksize", o["dm.blocksize"])
    if block < 64 << 10 or block > GIB or block % (64 << 10):
        raise InvalidArgument(f"dm.blocksize={o['dm.blocksize']!r}: must be 64K to 1G in 64K steps")
    mfs = o["dm.min_free_space"].strip()
    if not mfs.endswith("%") or not mfs[:-1].isdigit() or int(mfs[:-1]) >= 100:
        raise InvalidArgument(
            f"dm.min_free_space={mfs!r}: must be a percentage below 100%, like 10%"
        )
    base = parse_bytes("dm.basesize", o["dm.basesize"])
    if base % 512:
        raise InvalidArgument("dm.basesize must be a multiple of 512 bytes")
    try:
        mkfs_args = shlex.split(o["dm.mkfsarg"])
    except ValueError as e:
        raise InvalidArgument(f"dm.mkfsarg: {e}") from None
    return Options(
        base_size=base,
        data_size=parse_bytes("dm.loopdatasize", o["dm.loopdatasize"]),
        metadata_size=(
            parse_bytes("dm.loopmetadatasize", o["dm.loopmetadatasize"])
            if o["dm.loopmetadatasize"]
            else None
        ),
        fs=fs,
        mkfs_args=mkfs_args,
        mount_options=[x for x in o["dm.mountopt"].split(",") if x],
        block_size=block,
        min_free_percent=int(mfs[:-1]),
        thin_pool_dev=o["dm.thinpooldev"],
        deferred_removal=parse_bool("dm.use_deferred_removal", o["dm.use_deferred_removal"]),
        deferred_deletion=parse_bool("dm.use_deferred_deletion", o["dm.use_deferred_deletion"]),
        given=dict(options),
    )
