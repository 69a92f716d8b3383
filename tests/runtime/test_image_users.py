"""Who a container runs as: the ids that `-u` and the image's /etc/passwd and /etc/group give
are valid ids or a one-line error ((uid_t)-1 is the kernel's "no change", which would leave
the container root), and those files are read inside the image's root filesystem (never a host
file through the image's symlinks), as regular files of bounded size only (a FIFO there would
hang `run`, /dev/zero would read until memory runs out)."""

from __future__ import annotations

import resource

import pytest
from imagecraft import busybox_with, one_line_error, sk

from storagekit import _native, registry
from storagekit.runtime import MAX_ID, TABLE_LIMIT

DRIVERS = sorted(registry.available())
NO_CHANGE = 2**32 - 1  # (uid_t)-1


def _limited_memory() -> None:
    # What a run may use: a /dev/zero read as a table would pass it, and fail the run.
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))



def _image(root, busybox_tar, tmp_path, name, entries, drop=("etc/passwd", "etc/group")):
    tar = busybox_with(busybox_tar, tmp_path / f"{name}.tar", entries, drop)
    proc = sk(root, "image", "import", tar, "--name", name)
    assert proc.returncode == 0, proc.stderr


def _run(root, *args, user=None):
    opts = ["-u", user] if user is not None else []
    return sk(root, "run", "--rm", *opts, *args, timeout=60)


PASSWD = (b"root:x:0:0:root:/root:/bin/sh\n"
          b"maxuid:x:4294967295:0::/:/bin/sh\n"
          b"maxgid:x:5:4294967295::/:/bin/sh\n"
          b"garbage:x:12ab:0::/:/bin/sh\n"
          b"ok:x:4294967294:4294967294::/:/bin/sh\n")
GROUP = b"root:x:0:\nmaxgroup:x:4294967295:\nokgroup:x:77:\n"


def test_ids_must_be_valid(store_root, busybox_tar, tmp_path):
    root = store_root
    _image(root, busybox_tar, tmp_path, "ids", [
        {"name": "etc/passwd", "data": PASSWD}, {"name": "etc/group", "data": GROUP}])
    for user in [str(NO_CHANGE), f"{NO_CHANGE}:0", f"0:{NO_CHANGE}", "-1", "0:-1", "12x",
                 "99999999999999999999999", "+5", "maxuid", "maxgid", "garbage",
                 "root:maxgroup", "0:maxgroup"]:
        proc = _run(root, "ids", "id", user=user)
        line = one_line_error(proc)
        assert "not a valid id" in line, (user, line)
        assert proc.stdout == b"", user  # the container never ran
    # The largest valid ids run, as themselves.
    proc = _run(root, "ids", "sh", "-c", "id -u; id -g", user="ok")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(MAX_ID).encode()] * 2
    proc = _run(root, "ids", "id", "-g", user="ok:okgroup")
    assert (proc.returncode, proc.stdout.strip()) == (0, b"77"), proc.stderr


@pytest.mark.parametrize("field", ["uid", "gid", "groups"])
def test_native_spawn_refuses_the_no_change_id(tmp_path, field):
    """The native runtime refuses (uid_t)-1 itself, whatever its caller checked."""
    kw = {"groups": [0, NO_CHANGE]} if field == "groups" else {field: NO_CHANGE}
    with pytest.raises(ValueError, match="not a valid user or group id"):
        _native.spawn_container(str(tmp_path), ["/bin/true"], [], **kw)


def test_tables_are_read_inside_the_image(store_root, busybox_tar, tmp_path):
    root = store_root
    host_etc = tmp_path / "host-etc"
    host_etc.mkdir()
    (host_etc / "passwd").write_text("hostonly:x:777:777::/:/bin/sh\n")
    (host_etc / "group").write_text("hostgroup:x:778:\n")
    # /etc -> a host directory (absolute), and a relative escape attempt for the group file.
    _image(root, busybox_tar, tmp_path, "etclink", [
        {"name": "etc", "type": "symlink", "link": str(host_etc)}], drop=("etc",))
    _image(root, busybox_tar, tmp_path, "dotdot", [
        {"name": "etc/passwd", "type": "symlink",
         "link": "../../../../../../../.." + str(host_etc / "passwd")},
        {"name": "etc/group", "type": "symlink",
         "link": "../../../../../../../.." + str(host_etc / "group")}])
    for image in ["etclink", "dotdot"]:
        line = one_line_error(_run(root, image, "id", user="hostonly"))
        assert "no user 'hostonly'" in line, line
        line = one_line_error(_run(root, image, "id", user="0:hostgroup"))
        assert "no group 'hostgroup'" in line, line
        proc = _run(root, image, "id", "-u")  # nothing to look up there: root, by id
        assert (proc.returncode, proc.stdout.strip()) == (0, b"0"), proc.stderr
    # A symlink that stays inside the image is followed, as the container's libc would.
    _image(root, busybox_tar, tmp_path, "inside", [
        {"name": "usr/share/base/passwd", "data": b"inside:x:4321:4322::/:/bin/sh\n"},
        {"name": "usr/share/base/group", "data": b"insidegroup:x:4323:\n"},
        {"name": "etc/passwd", "type": "symlink", "link": "/usr/share/base/passwd"},
        {"name": "etc/group", "type": "symlink", "link": "../usr/share/base/group"}])
    proc = _run(root, "inside", "sh", "-c", "id -u; id -g", user="inside")
    assert (proc.returncode, proc.stdout.split()) == (0, [b"4321", b"4322"]), proc.stderr
    proc = _run(root, "inside", "id", "-g", user="inside:insidegroup")
    assert (proc.returncode, proc.stdout.strip()) == (0, b"4323"), proc.stderr


def test_tables_must_be_small_regular_files(store_root, busybox_tar, tmp_path):
    root = store_root
    group = {"name": "etc/group", "data": b"root:x:0:\n"}
    passwd = {"name": "etc/passwd", "data": b"root:x:0:0::/:/bin/sh\n"}
    cases = {
        "fifo": ([{"name": "etc/passwd", "type": "fifo"}, group], "not a regular file"),
        "zero": ([{"name": "etc/passwd", "type": "char", "devmajor": 1, "devminor": 5},
                  group], "not a regular file"),
        "huge": ([{"name": "etc/passwd", "data": b"x" * (TABLE_LIMIT + 1)}, group],
                 f"larger than {TABLE_LIMIT} bytes"),
        "dir": ([{"name": "etc/passwd", "type": "dir"}, group], "not a regular file"),
        "fifogroup": ([passwd, {"name": "etc/group", "type": "fifo"}], "not a regular file"),
    }
    for name, (entries, _) in cases.items():
        _image(root, busybox_tar, tmp_path, name, entries)
    for name, (_, expected) in cases.items():
        user = "0:root" if name == "fifogroup" else None
        proc = sk(root, "run", "--rm", *(["-u", user] if user else []), name, "id",
                  timeout=60, preexec_fn=_limited_memory)
        line = one_line_error(proc)
        assert expected in line and "/etc/" in line, (name, line)
    # Ids given in full need no table: such an image still runs.
    proc = _run(root, "fifo", "echo", "ran", user="0:0")
    assert (proc.returncode, proc.stdout.strip()) == (0, b"ran"), proc.stderr
