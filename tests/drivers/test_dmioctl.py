"""The kernel device-mapper backend cannot run here (no /dev/mapper/control): its tables,
messages and ioctl buffers are checked against the kernel's own header, compiled with gcc."""

from __future__ import annotations

import errno
import shutil
import subprocess

import pytest

from storagekit.drivers.devicemapper import dmioctl as dm

HEADER_PROBE = r"""
#include <stdio.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <linux/dm-ioctl.h>
int main(void) {
    printf("%zu %zu %zu\n", sizeof(struct dm_ioctl), sizeof(struct dm_target_spec),
           sizeof(struct dm_target_msg));
    printf("%zu %zu %zu %zu %zu\n", offsetof(struct dm_ioctl, data_size),
           offsetof(struct dm_ioctl, flags), offsetof(struct dm_ioctl, dev),
           offsetof(struct dm_ioctl, name), offsetof(struct dm_ioctl, uuid));
    printf("%lu %lu %lu %lu %lu %lu\n", (unsigned long)DM_DEV_CREATE,
           (unsigned long)DM_DEV_REMOVE, (unsigned long)DM_DEV_SUSPEND,
           (unsigned long)DM_TABLE_LOAD, (unsigned long)DM_TABLE_STATUS,
           (unsigned long)DM_TARGET_MSG);
    printf("%d %d %d %d\n", DM_READONLY_FLAG, DM_SUSPEND_FLAG, DM_DEFERRED_REMOVE,
           DM_VERSION_MAJOR);
    return 0;
}
"""


@pytest.fixture(scope="module")
def kernel_header(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to read the kernel's dm-ioctl.h")
    d = tmp_path_factory.mktemp("dmprobe")
    (d / "probe.c").write_text(HEADER_PROBE)
    subprocess.run(["gcc", "-o", str(d / "probe"), str(d / "probe.c")], check=True)
    lines = subprocess.run(
        [str(d / "probe")], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    return [list(map(int, line.split())) for line in lines if line]


def test_layout_matches_the_kernel_header(kernel_header):
    sizes, offsets, cmds, flags = kernel_header
    assert sizes == [dm._DM_IOCTL.size, dm._TARGET_SPEC.size, dm._TARGET_MSG.size]
    buf = dm.pack("pool", "uuid-1", flags=dm.SUSPEND_FLAG, dev=(253 << 8) | 1)
    data_size, fl, dev, name, uuid = offsets
    assert int.from_bytes(buf[data_size : data_size + 4], "little") == len(buf)
    assert int.from_bytes(buf[fl : fl + 4], "little") == dm.SUSPEND_FLAG
    assert int.from_bytes(buf[dev : dev + 8], "little") == (253 << 8) | 1
    assert bytes(buf[name : name + 5]) == b"pool\0" and bytes(buf[uuid : uuid + 7]) == b"uuid-1\0"
    assert cmds == [
        dm.CMD[c]
        for c in (
            "dev_create",
            "dev_remove",
            "dev_suspend",
            "table_load",
            "table_status",
            "target_msg",
        )
    ]
    assert flags == [dm.READONLY_FLAG, dm.SUSPEND_FLAG, dm.DEFERRED_REMOVE, dm.DM_VERSION[0]]


def test_tables_as_docker_loaded_them():
    pool = dm.thin_pool_table(
        209715200, "/dev/loop1", "/dev/loop0", 128, 32768, ["skip_block_zeroing"]
    )
    assert (pool.type, pool.params) == (
        "thin-pool",
        "/dev/loop1 /dev/loop0 128 32768 1 skip_block_zeroing",
    )
    assert dm.thin_pool_table(100, "m", "d", 1024, 0).params == "m d 1024 0"
    thin = dm.thin_table(20971520, "/dev/mapper/docker-pool", 7)
    assert (thin.start, thin.length, thin.params) == (0, 20971520, "/dev/mapper/docker-pool 7")
    for bad in (64, 200, 2097152 + 128):
        with pytest.raises(ValueError):
            dm.thin_pool_table(100, "m", "d", bad, 0)
    with pytest.raises(ValueError):
        dm.thin_table(100, "p", 1 << 24)


def test_target_and_message_payloads():
    targets = [dm.thin_table(100, "pool", 1), dm.thin_table(50, "pool", 22)]
    blob = dm.targets_payload(targets)
    first = dm._TARGET_SPEC.unpack_from(blob, 0)
    assert first[:2] == (0, 100) and first[4].rstrip(b"\0") == b"thin"
    assert first[3] % 8 == 0  # next spec 8-aligned
    assert blob[dm._TARGET_SPEC.size :].startswith(b"pool 1\0")
    second = dm._TARGET_SPEC.unpack_from(blob, first[3])
    assert second[1] == 50 and blob[first[3] + dm._TARGET_SPEC.size :].startswith(b"pool 22\0")
    msg = dm.message_payload("create_snap 5 3")
    assert msg == b"\0" * 8 + b"create_snap 5 3\0"
    buf = dm.pack("p", payload=msg)
    assert dm.unpack_header(buf)["name"] == "p"
    assert bytes(buf[dm._DM_IOCTL.size : dm._DM_IOCTL.size + len(msg)]) == msg


def test_status_answer_parsing():
    # an answer as the kernel writes it: data_start after the header, next from the first spec
    spec = dm._TARGET_SPEC.pack(0, 2048, 0, 0, b"thin-pool") + b"0 10/100 5/1000 - rw\0"
    buf = dm.pack("pool", payload=spec, target_count=1)
    (t,) = dm.unpack_status(buf)
    assert (t.type, t.length, t.params) == ("thin-pool", 2048, "0 10/100 5/1000 - rw")


def test_buffer_full_flag_matches_the_kernel_header(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to read the kernel's dm-ioctl.h")
    (tmp_path / "flag.c").write_text(
        "#include <stdio.h>\n#include <sys/ioctl.h>\n#include <linux/dm-ioctl.h>\n"
        'int main(void) { printf("%d\\n", DM_BUFFER_FULL_FLAG); return 0; }\n'
    )
    subprocess.run(["gcc", "-o", str(tmp_path / "flag"), str(tmp_path / "flag.c")], check=True)
    out = subprocess.run([str(tmp_path / "flag")], capture_output=True, text=True, check=True)
    assert int(out.stdout) == dm.BUFFER_FULL_FLAG


class KernelAnswering(dm.KernelDm):
    """TABLE_STATUS answered as drivers/md/dm-ioctl.c answers it (there is no device-mapper
    here to ask): when the status does not fit the buffer the caller gave (data_size), the
    answer is DM_BUFFER_FULL_FLAG and no targets; else the targets after the header."""

    def __init__(self, targets: list[dm.Target]) -> None:  # no /dev/mapper/control to open
        self.targets = targets
        self.asked: list[int] = []

    def _call(self, cmd: str, buf: bytearray) -> bytearray:
        assert cmd == "table_status"
        head = list(dm._DM_IOCTL.unpack_from(buf, 0))
        data_size, data_start = head[3], head[4]
        self.asked.append(data_size)
        specs = bytearray()
        for t in self.targets:  # in answers, `next` counts from the first spec
            body = t.params.encode() + b"\0"
            nxt = len(specs) + dm._TARGET_SPEC.size + len(body)
            specs += dm._TARGET_SPEC.pack(t.start, t.length, 0, nxt, t.type.encode()) + body
        if data_start + len(specs) > data_size:
            head[7] |= dm.BUFFER_FULL_FLAG
            head[5] = 0
        else:
            buf[data_start : data_start + len(specs)] = specs
            head[5] = len(self.targets)
        dm._DM_IOCTL.pack_into(buf, 0, *head)
        return buf


def test_status_asks_again_with_a_bigger_buffer_when_the_answer_does_not_fit():
    small = [dm.Target(0, 2048, "thin-pool", "0 10/100 5/1000 - rw")]
    kernel = KernelAnswering(small)
    assert kernel.status("pool") == small
    assert kernel.asked == [dm.ANSWER_BUFFER]  # it fitted: asked once

    # A table of many targets, say a pool spread over striped segments: 40 KiB of status.
    big = [dm.Target(i * 2048, 2048, "thin-pool", f"{i} " + "x" * 1000) for i in range(40)]
    kernel = KernelAnswering(big)
    assert kernel.status("pool") == big
    assert kernel.asked == [dm.ANSWER_BUFFER, 2 * dm.ANSWER_BUFFER, 4 * dm.ANSWER_BUFFER]


def test_status_gives_up_past_the_bound(monkeypatch):
    monkeypatch.setattr(dm, "MAX_ANSWER_BUFFER", 4 * dm.ANSWER_BUFFER)
    huge = [dm.Target(0, 2048, "thin-pool", "x" * (4 * dm.ANSWER_BUFFER))]
    kernel = KernelAnswering(huge)
    with pytest.raises(OSError) as e:
        kernel.status("pool")
    assert e.value.errno == errno.ENOBUFS and e.value.filename == "pool"
    assert kernel.asked == [dm.ANSWER_BUFFER, 2 * dm.ANSWER_BUFFER, 4 * dm.ANSWER_BUFFER]
