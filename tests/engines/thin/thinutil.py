"""Helpers for the thin engine tests: pools in temporary files, and the verdicts of Debian's
thin-provisioning-tools (thin_check, thin_dump, thin_ls, thin_delta) on what the engine wrote."""

from __future__ import annotations

import array
import fcntl
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from thinmeta import check_data_space_map

from storagekit._native import ThinPool

BS = 64 << 10  # the default data block size (128 sectors)


def require_tools() -> None:
    """Skip unless thin-provisioning-tools are installed (scripts/bootstrap.sh installs them)."""
    for tool in ("thin_check", "thin_dump", "thin_restore", "thin_ls", "thin_delta"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing: apt-get install thin-provisioning-tools")


def new_pool(tmp_path: Path, meta_mib: int = 4, data_mib: int = 16, **kw) -> tuple:
    meta, data = tmp_path / "meta", tmp_path / "data"
    kw.setdefault("commit_interval", 0)
    pool = ThinPool.create(meta, data, metadata_size=meta_mib << 20, data_size=data_mib << 20, **kw)
    return pool, meta, data


def thin_check(meta: Path, *args: str) -> str:
    r = subprocess.run(["thin_check", *args, str(meta)], capture_output=True, text=True)
    assert r.returncode == 0, f"thin_check failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


# ------------------------------------------------------------------------------ thin_dump


@dataclass
class DumpedDevice:
    mapped_blocks: int
    transaction: int
    creation_time: int
    snap_time: int
    mappings: dict[int, tuple[int, int]] = field(default_factory=dict)  # vblock -> (data, time)


@dataclass
class Dump:
    attrs: dict[str, str]
    devices: dict[int, DumpedDevice]


def _mappings(elem: ET.Element, defs: dict[str, dict], out: dict) -> None:
    for m in elem:
        a = {k: int(v) for k, v in m.attrib.items() if k != "name"}
        if m.tag == "single_mapping":
            out[a["origin_block"]] = (a["data_block"], a["time"])
        elif m.tag == "range_mapping":
            for i in range(a["length"]):
                out[a["origin_begin"] + i] = (a["data_begin"] + i, a["time"])
        elif m.tag == "ref":
            out.update(defs[m.attrib["name"]])


def parse_dump(text: str) -> Dump:
    root = ET.fromstring(text)
    assert root.tag == "superblock", text[:200]
    defs: dict[str, dict] = {}
    devices = {}
    for child in root:
        if child.tag == "def":
            defs[child.attrib["name"]] = {}
            _mappings(child, defs, defs[child.attrib["name"]])
        elif child.tag == "device":
            a = child.attrib
            dev = DumpedDevice(
                int(a["mapped_blocks"]),
                int(a["transaction"]),
                int(a["creation_time"]),
                int(a["snap_time"]),
            )
            _mappings(child, defs, dev.mappings)
            devices[int(a["dev_id"])] = dev
    return Dump(dict(root.attrib), devices)


def thin_dump(meta: Path, *args: str) -> Dump:
    r = subprocess.run(["thin_dump", *args, str(meta)], capture_output=True, text=True)
    assert r.returncode == 0, f"thin_dump failed:\n{r.stderr}"
    return parse_dump(r.stdout)


# ------------------------------------------------------------------- engine vs the tools


def engine_view(pool: ThinPool) -> dict[int, DumpedDevice]:
    view = {}
    for dev in pool.devices():
        s = pool.device_status(dev)
        view[dev] = DumpedDevice(
            s["mapped_blocks"],
            s["transaction_id"],
            s["creation_time"],
            s["snapshotted_time"],
            {vb: (db, t) for vb, db, t in pool.mappings(dev)},
        )
    return view


def close_and_verify(pool: ThinPool, meta: Path, exact: bool = True) -> Dump:
    """Close the pool, then: thin_check passes; thin_dump shows the devices, details and (with
    exact) every mapping the engine reported; the data space map matches the mappings."""
    pool.commit()
    view, status = engine_view(pool), pool.status()
    pool.close()
    thin_check(meta)
    dump = thin_dump(meta)
    assert int(dump.attrs["transaction"]) == status["transaction_id"]
    assert int(dump.attrs["time"]) == status["time"]
    assert int(dump.attrs["data_block_size"]) == status["data_block_size"]
    assert int(dump.attrs["nr_data_blocks"]) == status["total_data_blocks"]
    assert sorted(dump.devices) == sorted(view)
    for dev, mine in view.items():
        theirs = dump.devices[dev]
        assert theirs.mapped_blocks == mine.mapped_blocks == len(theirs.mappings), dev
        assert (theirs.transaction, theirs.creation_time, theirs.snap_time) == (
            mine.transaction,
            mine.creation_time,
            mine.snap_time,
        ), dev
        if exact:
            assert theirs.mappings == mine.mappings, dev
    check_data_space_map(meta)
    used = {db for d in dump.devices.values() for db, _ in d.mappings.values()}
    if not status["held_metadata_root"]:
        assert status["used_data_blocks"] == len(used)
    return dump


# ---------------------------------------------------------------------------- extents

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_EXTENT_SHARED = 0x2000


def shared_bytes(path: Path, start: int, length: int, count: int = 256) -> int:
    """Bytes of [start, start+length) of the file in extents the filesystem reports as shared
    (reflinked) with another file or range (FIEMAP)."""
    header = struct.pack("=QQIIII", start, length, 1, 0, count, 0)  # FIEMAP_FLAG_SYNC
    buf = array.array("B", header + bytes(56 * count))
    with open(path, "rb") as f:
        fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf, True)
    total = 0
    for i in range(struct.unpack_from("=I", buf, 20)[0]):
        logical, _, ext_len, _, _, flags = struct.unpack_from("=QQQQQI", buf, 32 + 56 * i)
        if flags & FIEMAP_EXTENT_SHARED:
            lo, hi = max(logical, start), min(logical + ext_len, start + length)
            total += max(0, hi - lo)
    return total
