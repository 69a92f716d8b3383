"""An independent reader of dm-thin metadata, for checks that thin_check 0.9 does not make.

thin_check verifies checksums, btree shape and metadata reference counts, but it does not
compare the data space map with the mappings (the comparison in 0.9 reads the same map twice).
This module walks the structures itself: the superblock, the two-level mapping tree, the data
space map's index btree, bitmaps and ref-count tree. It shares no code with the engine.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 4096
ENTRIES_PER_BITMAP = (BLOCK - 16) * 4
SUPERBLOCK_MAGIC = 27022010
SUPERBLOCK_XOR = 160774


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def dm_checksum(block: bytes, xor: int) -> int:
    """crc32c over everything after the csum field, seeded ~0, not inverted, xored."""
    crc = 0xFFFFFFFF
    for b in block[4:]:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ xor


def reseal_superblock(path: Path, flags_or: int = 0, flags_and: int = 0xFFFFFFFF) -> None:
    """Change the superblock's flags and write a valid checksum (to craft test cases)."""
    with open(path, "r+b") as f:
        sb = bytearray(f.read(BLOCK))
        flags = (struct.unpack_from("<I", sb, 4)[0] | flags_or) & flags_and
        struct.pack_into("<I", sb, 4, flags)
        struct.pack_into("<I", sb, 0, dm_checksum(bytes(sb), SUPERBLOCK_XOR))
        f.seek(0)
        f.write(sb)


@dataclass
class Superblock:
    flags: int
    magic: int
    version: int
    time: int
    trans_id: int
    held_root: int
    data_sm: tuple[int, int, int, int]  # nr_blocks, nr_allocated, bitmap_root, ref_count_root
    meta_sm: tuple[int, int, int, int]
    mapping_root: int
    details_root: int
    data_block_size: int
    metadata_nr_blocks: int


@dataclass
class Metadata:
    path: Path
    raw: bytes = field(repr=False)

    @classmethod
    def read(cls, path: Path) -> Metadata:
        return cls(Path(path), Path(path).read_bytes())

    def block(self, b: int) -> bytes:
        return self.raw[b * BLOCK : (b + 1) * BLOCK]

    def superblock(self, b: int = 0) -> Superblock:
        s = self.block(b)
        return Superblock(
            flags=struct.unpack_from("<I", s, 4)[0],
            magic=struct.unpack_from("<Q", s, 32)[0],
            version=struct.unpack_from("<I", s, 40)[0],
            time=struct.unpack_from("<I", s, 44)[0],
            trans_id=struct.unpack_from("<Q", s, 48)[0],
            held_root=struct.unpack_from("<Q", s, 56)[0],
            data_sm=struct.unpack_from("<QQQQ", s, 64),
            meta_sm=struct.unpack_from("<QQQQ", s, 192),
            mapping_root=struct.unpack_from("<Q", s, 320)[0],
            details_root=struct.unpack_from("<Q", s, 328)[0],
            data_block_size=struct.unpack_from("<I", s, 336)[0],
            metadata_nr_blocks=struct.unpack_from("<Q", s, 344)[0],
        )

    # ---------------------------------------------------------------------------- btrees

    def node(self, b: int) -> tuple[bool, list[int], list[bytes]]:
        n = self.block(b)
        flags, _, nr, mx, vsize = struct.unpack_from("<IQIII", n, 4)
        keys = list(struct.unpack_from(f"<{nr}Q", n, 32))
        base = 32 + 8 * mx
        values = [n[base + i * vsize : base + (i + 1) * vsize] for i in range(nr)]
        return bool(flags & 2), keys, values

    def walk(self, root: int, seen: set[int] | None = None):
        """(key, value, leaf block) of every entry; with `seen`, a node already visited
        through another path is skipped (shared subtrees)."""
        if seen is not None:
            if root in seen:
                return
            seen.add(root)
        leaf, keys, values = self.node(root)
        if leaf:
            for k, v in zip(keys, values, strict=True):
                yield k, v, root
        else:
            for v in values:
                yield from self.walk(struct.unpack("<Q", v)[0], seen)

    def device_roots(self, sb: Superblock | None = None) -> dict[int, int]:
        """Device id -> root block of its mapping tree."""
        sb = sb or self.superblock()
        return {k: struct.unpack("<Q", v)[0] for k, v, _ in self.walk(sb.mapping_root)}

    # ------------------------------------------------------------------------ data space

    def data_counts(self) -> list[int]:
        """Reference counts as the data space map stores them."""
        nr, _, index_root, rc_root = self.superblock().data_sm
        counts = [0] * nr
        for i, entry, _ in self.walk(index_root):
            bitmap = self.block(struct.unpack_from("<Q", entry)[0])
            first = i * ENTRIES_PER_BITMAP
            for j in range(min(ENTRIES_PER_BITMAP, nr - first)):
                byte = bitmap[16 + (2 * j) // 8]
                hi = (byte >> ((2 * j) % 8)) & 1
                lo = (byte >> ((2 * j + 1) % 8)) & 1
                counts[first + j] = hi * 2 + lo
        for b, v, _ in self.walk(rc_root):
            assert counts[b] == 3, f"ref-count tree holds block {b}, bitmap says {counts[b]}"
            counts[b] = struct.unpack("<I", v)[0]
        return counts

    def expected_data_counts(self) -> list[int]:
        """Reference counts implied by the mapping trees: each leaf node holds one reference
        to each data block in it, however many devices share that leaf."""
        sb = self.superblock()
        counts = [0] * sb.data_sm[0]
        seen: set[int] = set()
        roots = [sb.mapping_root]
        if sb.held_root:
            roots.append(self.superblock(sb.held_root).mapping_root)
        for top in roots:
            for _, v, _ in self.walk(top):
                for _, bt, _ in self.walk(struct.unpack("<Q", v)[0], seen):
                    counts[struct.unpack("<Q", bt)[0] >> 24] += 1
        return counts


def check_data_space_map(path: Path) -> None:
    """Fail unless the data space map matches the mappings exactly (and its allocated count)."""
    md = Metadata.read(path)
    actual, expected = md.data_counts(), md.expected_data_counts()
    diff = [(b, a, e) for b, (a, e) in enumerate(zip(actual, expected, strict=True)) if a != e]
    assert not diff, f"data space map differs (block, stored, expected): {diff[:10]}"
    allocated = md.superblock().data_sm[1]
    assert allocated == sum(1 for c in actual if c), "data space map nr_allocated is wrong"
