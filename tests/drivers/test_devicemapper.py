"""The devicemapper driver beyond the contract: options, the base device, snapshots per
layer, Docker's transaction protocol and its rollback, status, and the kernel backend's
tables and messages (which cannot run here: no device-mapper)."""

from __future__ import annotations

import json
import os

import pytest

from storagekit import _native
from storagekit.drivers.devicemapper import DeviceMapperDriver
from storagekit.drivers.devicemapper import options as dmopts
from storagekit.drivers.devicemapper.backends import KernelBackend, parse_pool_status
from storagekit.engines import thin
from storagekit.errors import DriverUnsupported, InvalidArgument, StorageError

pytestmark = pytest.mark.skipif(
    not DeviceMapperDriver.probe("/tmp")[0],
    reason=f"devicemapper: {DeviceMapperDriver.probe('/tmp')[1]}",
)

SMALL = {"dm.basesize": "256M", "dm.loopdatasize": "1G"}


@pytest.fixture
def driver(tmp_path):
    d = DeviceMapperDriver(tmp_path / "dm", SMALL)
    yield d
    d.cleanup()


def test_options_named_like_dockers():
    o = dmopts.parse(
        {
            "dm.basesize": "20G",
            "dm.fs": "xfs",
            "dm.blocksize": "512K",
            "dm.mkfsarg": "-m crc=1",
            "dm.mountopt": "noatime,nobarrier",
            "dm.min_free_space": "5%",
            "dm.use_deferred_removal": "true",
        }
    )
    assert (o.base_size, o.fs, o.block_size) == (20 << 30, "xfs", 512 << 10)
    assert o.mkfs_args == ["-m", "crc=1"] and o.mount_options == ["noatime", "nobarrier"]
    assert o.min_free_percent == 5 and o.deferred_removal and not o.deferred_deletion
    bad = [
        {"dm.nosuch": "1"},
        {"dm.fs": "btrfs"},
        {"dm.blocksize": "100K"},
        {"dm.min_free_space": "10"},
        {"dm.min_free_space": "100%"},
        {"dm.basesize": "lots"},
        {"dm.use_deferred_removal": "maybe"},
    ]
    for b in bad:
        with pytest.raises(InvalidArgument, match=next(iter(b))):
            dmopts.parse(b)


def test_layers_are_snapshots_sharing_blocks(driver):
    driver.create_rw("base")  # written through its mount: a writable layer
    path = driver.get("base")
    assert os.listdir(path) == []  # no lost+found: the filesystem root is the layer root
    with open(os.path.join(path, "big"), "wb") as f:
        f.write(os.urandom(8 << 20))
    driver.put("base")
    used = thin.status(driver.pool_dir)["used_data_blocks"]
    driver.create("child", "base")
    child_info = driver.metadata("child")
    assert int(child_info["DeviceId"]) != int(driver.metadata("base")["DeviceId"])
    path = driver.get("child")
    assert _native.find_mount(path)["fstype"] == "ext4"
    with open(os.path.join(path, "big"), "rb") as f:
        f.read()
    driver.put("child")
    # the snapshot shares its parent's blocks: reading the 8 MiB file (128 blocks) copied
    # none; mounting ext4 rewrote a few of its own (superblock, journal, an inode's atime)
    assert used <= thin.status(driver.pool_dir)["used_data_blocks"] < used + 8
    st = dict(driver.status())
    for key in (
        "Pool Blocksize",
        "Base Device Size",
        "Backing Filesystem",
        "Data Space Used",
        "Data Space Total",
        "Data Space Available",
        "Metadata Space Used",
        "Metadata Space Total",
        "Metadata Space Available",
        "Thin Pool Minimum Free Space",
        "Data loop file",
        "Metadata loop file",
    ):
        assert st[key], key
    assert st["Base Device Size"] == "268.4MB" and st["Pool Blocksize"] == "65.54kB"


def test_xfs_base(tmp_path):
    # mkfs.xfs wants at least 300 MB
    d = DeviceMapperDriver(tmp_path / "dm", SMALL | {"dm.fs": "xfs", "dm.basesize": "320M"})
    try:
        d.create_rw("a")  # written through its mount: a writable layer
        d.create("b", "a")
        pa, pb = d.get("a"), d.get("b")  # two snapshots of one xfs, mounted at once
        assert _native.find_mount(pb)["fstype"] == "xfs"
        with open(os.path.join(pa, "f"), "w") as f:
            f.write("a")
        assert not os.path.exists(os.path.join(pb, "f"))
        d.put("a")
        d.put("b")
    finally:
        d.cleanup()


def test_transaction_records_and_rollback(tmp_path):
    home = tmp_path / "dm"
    d = DeviceMapperDriver(home, SMALL)
    d.create("a")
    meta = home / "metadata"
    rec = json.loads((meta / "layers" / "a").read_text())
    assert set(rec) == {"device_id", "size", "transaction_id", "initialized", "deleted"}
    assert (
        json.loads((meta / "transaction-metadata").read_text())["open_transaction_id"]
        == thin.status(d.pool_dir)["transaction_id"]
    )
    # a crash between the pool message and set_transaction_id: device made, record written,
    # transaction still open
    pool_tid = thin.status(d.pool_dir)["transaction_id"]
    thin.message(d.pool_dir, "create_snap 77 1")
    (meta / "layers" / "ghost").write_text(
        json.dumps(
            {
                "device_id": 77,
                "size": 1 << 20,
                "transaction_id": pool_tid + 1,
                "initialized": True,
                "deleted": False,
            }
        )
    )
    (meta / "transaction-metadata").write_text(
        json.dumps({"open_transaction_id": pool_tid + 1, "device_hash": "ghost", "device_id": 77})
    )
    d.cleanup()
    d2 = DeviceMapperDriver(home, SMALL)  # start-up rolls the transaction back
    try:
        assert not (meta / "layers" / "ghost").exists()
        ids = {dev["id"] for dev in thin.status(d2.pool_dir)["thin_devices"]}
        assert 77 not in ids
        assert d2.exists("a")
    finally:
        d2.cleanup()


def test_min_free_space(tmp_path):
    d = DeviceMapperDriver(
        tmp_path / "dm",
        {"dm.basesize": "64M", "dm.loopdatasize": "64M", "dm.min_free_space": "99%"},
    )
    try:
        d.create_rw("a")  # the pool is still nearly empty
        with open(os.path.join(d.get("a"), "f"), "wb") as f:
            f.write(os.urandom(4 << 20))  # 64 of the pool's 1024 blocks: less than 99% free
        d.put("a")
        with pytest.raises(StorageError, match="free data blocks"):
            d.create("b", "a")
        assert not d.exists("b")
    finally:
        d.cleanup()


class RecordingDm:
    """Stands in for /dev/mapper/control, which this kernel does not have: records what the
    kernel backend would send."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def call(*args, **kw):
            self.calls.append((name, args, kw))
            if name == "status":
                from storagekit.drivers.devicemapper.dmioctl import Target

                return [Target(0, 1, "thin-pool", "3 10/100 20/1000 - rw discard_passdown")]

        return call


def test_kernel_backend_tables_and_messages():
    dm = RecordingDm()
    b = KernelBackend.loop_pool(
        "storagekit-pool",
        "/x/data",
        "/x/metadata",
        128,
        100 << 30,
        dm=dm,
        attach=lambda p: {"/x/metadata": "/dev/loop1", "/x/data": "/dev/loop0"}[p],
    )
    assert dm.calls[0] == ("create", ("storagekit-pool",), {})
    (table,) = dm.calls[1][1][1]
    assert (table.type, table.params) == ("thin-pool", "/dev/loop1 /dev/loop0 128 16384")
    assert dm.calls[2] == ("resume", ("storagekit-pool",), {})
    b.message("create_snap 5 3")
    assert dm.calls[-1] == ("message", ("storagekit-pool", "create_snap 5 3"), {})
    assert b.activate(5, 10 << 30) == "/dev/mapper/storagekit-5"
    (thin_table,) = dm.calls[-2][1][1]
    assert thin_table.params == "/dev/mapper/storagekit-pool 5"
    assert thin_table.length == (10 << 30) // 512
    b.deferred_removal = True
    b.deactivate(5)
    assert dm.calls[-1] == ("remove", ("storagekit-5",), {"deferred": True})
    st = b.status()
    assert (st["transaction_id"], st["used_data_blocks"], st["total_data_blocks"]) == (3, 20, 1000)
    assert parse_pool_status("0 1/2 3/4 - ro needs_check")["needs_check"]


def test_status_names_each_pool_file_once(driver):
    st = driver.status()
    pool = os.path.join(driver.pool_dir)
    for name, key in (("data", "Data loop file"), ("metadata", "Metadata loop file")):
        assert [k for k, v in st if v == os.path.join(pool, name)] == [key]
    keys = [k for k, _ in st]
    assert len(keys) == len(set(keys))


def test_an_xfs_base_without_mkfs_xfs_is_refused_before_anything_is_made(tmp_path, monkeypatch):
    """dm.fs=xfs on a host without xfsprogs: the driver says so in one line when it starts,
    instead of failing half-way through making the pool and its base device."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("mkfs.ext4", "losetup", "mount", "umount"):  # all but mkfs.xfs
        for d in os.environ["PATH"].split(os.pathsep):
            if os.access(os.path.join(d, tool), os.X_OK):
                os.symlink(os.path.join(d, tool), tools / tool)
                break
    monkeypatch.setenv("PATH", str(tools))
    home = tmp_path / "dm"
    with pytest.raises(DriverUnsupported) as e:
        DeviceMapperDriver(home, SMALL | {"dm.fs": "xfs", "dm.basesize": "320M"})
    assert str(e.value) == (
        "storage driver 'devicemapper' is not supported here: dm.fs=xfs needs mkfs.xfs, "
        "which is not installed (xfsprogs)")
    assert not (home / "pool").exists() and not (home / "mnt").exists()
    d = DeviceMapperDriver(home, SMALL)  # ext4 needs only what is there
    try:
        d.create("a")
        assert d.exists("a")
    finally:
        d.cleanup()
