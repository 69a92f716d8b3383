"""Interchange with thin-provisioning-tools: metadata written by thin_restore is opened, read and
changed by the engine; metadata written by the engine is read by thin_ls, thin_delta, thin_rmap."""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter

from thinutil import BS, close_and_verify, new_pool, thin_check, thin_dump

from storagekit._native import ThinPool

RESTORE_XML = """\
<superblock uuid="" time="2" transaction="7" version="2" data_block_size="128" nr_data_blocks="64">
  <device dev_id="1" mapped_blocks="6" transaction="1" creation_time="0" snap_time="1">
    <range_mapping origin_begin="0" data_begin="10" length="4" time="0"/>
    <single_mapping origin_block="100" data_block="3" time="0"/>
    <single_mapping origin_block="101" data_block="20" time="1"/>
  </device>
  <device dev_id="2" mapped_blocks="5" transaction="3" creation_time="1" snap_time="1">
    <range_mapping origin_begin="0" data_begin="10" length="4" time="0"/>
    <single_mapping origin_block="100" data_block="3" time="0"/>
  </device>
  <device dev_id="9" mapped_blocks="3" transaction="5" creation_time="2" snap_time="2">
    <range_mapping origin_begin="1000" data_begin="30" length="3" time="2"/>
  </device>
</superblock>
"""

EXPECTED = {
    1: {0: (10, 0), 1: (11, 0), 2: (12, 0), 3: (13, 0), 100: (3, 0), 101: (20, 1)},
    2: {0: (10, 0), 1: (11, 0), 2: (12, 0), 3: (13, 0), 100: (3, 0)},
    9: {1000: (30, 2), 1001: (31, 2), 1002: (32, 2)},
}


def pattern(data_block: int) -> bytes:
    return (b"data%06d" % data_block) * (BS // 10) + bytes(BS % 10)


def test_engine_opens_what_thin_restore_wrote(tmp_path):
    xml, meta, data = tmp_path / "pool.xml", tmp_path / "meta", tmp_path / "data"
    xml.write_text(RESTORE_XML)
    meta.write_bytes(bytes(4 << 20))
    subprocess.run(
        ["thin_restore", "-i", str(xml), "-o", str(meta)], check=True, capture_output=True
    )
    thin_check(meta)
    data.write_bytes(b"".join(pattern(b) for b in range(64)))

    pool = ThinPool.open(meta, data, commit_interval=0)
    s = pool.status()
    assert (s["transaction_id"], s["time"], s["total_data_blocks"]) == (7, 2, 64)
    assert pool.devices() == [1, 2, 9]
    for dev, maps in EXPECTED.items():
        assert {vb: (db, t) for vb, db, t in pool.mappings(dev)} == maps
        st = pool.device_status(dev)
        assert st["mapped_blocks"] == len(maps)
        for vb, (db, _) in maps.items():
            assert pool.read(dev, vb * BS, BS) == pattern(db)
    assert pool.device_status(1)["transaction_id"] == 1
    assert pool.device_status(9)["creation_time"] == 2
    assert pool.read(1, 4 * BS, BS) == bytes(BS)

    # dev 2 shares 10..13 with dev 1 (mapped at time 0, before its snapshot at time 1): a
    # write copies; dev 1's block 101 (time 1) is its own: a write goes in place.
    pool.write(2, BS + 5, b"!")
    pool.write(1, 101 * BS, b"own")
    assert pool.read(1, BS, BS) == pattern(11)
    assert pool.read(2, BS, BS) == pattern(11)[:5] + b"!" + pattern(11)[6:]
    maps = {vb: db for vb, db, _ in pool.mappings(2)}
    assert maps[1] not in (10, 11, 12, 13, 3, 20, 30, 31, 32)
    assert {vb: db for vb, db, _ in pool.mappings(1)}[101] == 20
    pool.message("delete 9")
    pool.message("create_snap 4 1")
    close_and_verify(pool, meta)


def engine_mappings(pool) -> dict[int, dict[int, int]]:
    return {dev: {vb: db for vb, db, _ in pool.mappings(dev)} for dev in pool.devices()}


def make_history(tmp_path):
    """An origin, a snapshot that diverged from it, and an unrelated device."""
    pool, meta, _ = new_pool(tmp_path)
    pool.message("create_thin 1")
    pool.write(1, 0, b"a" * (6 * BS))
    pool.message("set_transaction_id 0 3")
    pool.message("create_snap 2 1")
    pool.write(2, BS, b"b")
    pool.write(2, 10 * BS, b"c")
    pool.discard(2, 4 * BS, BS)
    pool.write(1, 20 * BS, b"d")
    pool.message("create_thin 3")
    pool.write(3, 7 * BS, b"e" * (2 * BS))
    maps = engine_mappings(pool)
    status = {dev: pool.device_status(dev) for dev in pool.devices()}
    close_and_verify(pool, meta)
    return meta, maps, status


def test_thin_ls_agrees(tmp_path):
    meta, maps, status = make_history(tmp_path)
    users = Counter(db for m in maps.values() for db in m.values())
    r = subprocess.run(
        [
            "thin_ls",
            "--no-headers",
            "-o",
            "DEV,MAPPED_BLOCKS,EXCLUSIVE_BLOCKS,SHARED_BLOCKS,TRANSACTION,CREATE_TIME,SNAP_TIME",
            str(meta),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    fields = (ln.split() for ln in r.stdout.splitlines())
    rows = {int(f[0]): [int(x) for x in f[1:]] for f in fields}
    assert sorted(rows) == sorted(maps)
    for dev, m in maps.items():
        exclusive = sum(1 for db in m.values() if users[db] == 1)
        s = status[dev]
        assert rows[dev] == [
            len(m),
            exclusive,
            len(m) - exclusive,
            s["transaction_id"],
            s["creation_time"],
            s["snapshotted_time"],
        ], dev
    assert rows[1][3] == 0 and rows[3][3] == 3  # pool transaction id when each was created


def classify(left: dict[int, int], right: dict[int, int]) -> dict[int, str]:
    out = {}
    for vb in left.keys() | right.keys():
        if vb not in right:
            out[vb] = "left_only"
        elif vb not in left:
            out[vb] = "right_only"
        else:
            out[vb] = "same" if left[vb] == right[vb] else "different"
    return out


def test_thin_delta_agrees(tmp_path):
    meta, maps, _ = make_history(tmp_path)
    for a, b in ((1, 2), (2, 1), (1, 3)):
        r = subprocess.run(
            ["thin_delta", "--verbose", "--snap1", str(a), "--snap2", str(b), str(meta)],
            capture_output=True,
            text=True,
            check=True,
        )
        got = {}
        for section in ET.fromstring(r.stdout).find("diff"):
            for rng in section:
                begin, length = int(rng.attrib["begin"]), int(rng.attrib["length"])
                for i in range(length):
                    got[begin + i] = section.tag
                    if section.tag == "same":
                        assert maps[a][begin + i] == int(rng.attrib["data_begin"]) + i
                    elif section.tag == "different":
                        assert maps[a][begin + i] == int(rng.attrib["left_data_begin"]) + i
                        assert maps[b][begin + i] == int(rng.attrib["right_data_begin"]) + i
        assert got == classify(maps[a], maps[b]), (a, b)


def test_thin_rmap_agrees(tmp_path):
    meta, maps, _ = make_history(tmp_path)
    r = subprocess.run(
        ["thin_rmap", "--region", "0..256", str(meta)], capture_output=True, text=True, check=True
    )
    got = set()
    for line in r.stdout.splitlines():
        m = re.fullmatch(r"data (\d+)\.\.(\d+) -> thin\((\d+)\) (\d+)\.\.(\d+)", line)
        assert m, line
        d0, d1, dev, v0, _ = map(int, m.groups())
        got |= {(d0 + i, dev, v0 + i) for i in range(d1 - d0)}
    assert got == {(db, dev, vb) for dev, m in maps.items() for vb, db in m.items()}


def test_dump_restore_round_trip(tmp_path):
    """thin_dump of engine metadata, restored by thin_restore, opens with the same mappings."""
    meta, maps, _ = make_history(tmp_path)
    xml = subprocess.run(
        ["thin_dump", str(meta)], capture_output=True, text=True, check=True
    ).stdout
    (tmp_path / "dump.xml").write_text(xml)
    meta2 = tmp_path / "meta2"
    meta2.write_bytes(bytes(4 << 20))
    subprocess.run(
        ["thin_restore", "-i", str(tmp_path / "dump.xml"), "-o", str(meta2)],
        check=True,
        capture_output=True,
    )
    pool = ThinPool.open(meta2, tmp_path / "data", commit_interval=0)
    assert engine_mappings(pool) == maps
    close_and_verify(pool, meta2)
    assert thin_dump(meta2).devices.keys() == maps.keys()
