"""storagekit._native namespaces area: spawn_container, the native half of the container runtime.

Real namespaces, as root, around a tiny rootfs made of Debian's static busybox. What a
container sees is read from inside it (its own /proc, mountinfo, stat of /dev nodes); what it
must not do to the host is checked from the host (/proc/self/mountinfo, /proc/<pid>/...,
the rootfs directory). Every pid spawned is reaped here with os.waitpid.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storagekit import _native as n

BUSYBOX = Path("/bin/busybox")
APPLETS = [
    "sh", "ls", "cat", "echo", "hostname", "mount", "umount", "id", "sleep", "touch", "ps",
    "ip", "env", "pwd", "stat", "true", "head", "wc", "readlink", "mkdir",
]

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and mounts need root"),
    pytest.mark.skipif(not BUSYBOX.exists(), reason="needs busybox-static (/bin/busybox)"),
]


def make_rootfs(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for name in APPLETS:
        (root / "bin" / name).symlink_to("busybox")
    for d in ("tmp", "mnt", "work"):
        (root / d).mkdir()
    return root


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    return make_rootfs(tmp_path / "rootfs")


def run(rootfs: Path, argv: list[str], env: list[str] | None = None, *, stdin: bytes = b"",
        **kw) -> tuple[int, str, str]:
    """Spawn, feed stdin, collect stdout/stderr through files, reap. Returns
    (waitpid status, stdout, stderr)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryFile() as inp:
        inp.write(stdin)
        inp.seek(0)
        pid = n.spawn_container(str(rootfs), argv, ["PATH=/bin"] if env is None else env,
                                stdin=inp.fileno(), stdout=out.fileno(), stderr=err.fileno(),
                                **kw)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return status, out.read().decode(), err.read().decode()


def sh(rootfs: Path, script: str, **kw) -> str:
    """Run a shell script in the container; it must exit 0. Returns its stdout."""
    status, out, err = run(rootfs, ["sh", "-c", script], **kw)
    assert os.waitstatus_to_exitcode(status) == 0, (status, out, err)
    return out


class Interactive:
    """A container whose stdin and stdout are pipes held by the test, for checks from the host
    while it runs."""

    def __init__(self, rootfs: Path, script: str, **kw) -> None:
        in_r, self._in_w = os.pipe()
        self._out_r, out_w = os.pipe()
        try:
            self.pid = n.spawn_container(str(rootfs), ["sh", "-c", script], ["PATH=/bin"],
                                         stdin=in_r, stdout=out_w, **kw)
        finally:
            os.close(in_r)
            os.close(out_w)
        self._out = os.fdopen(self._out_r, "r")

    def readline(self) -> str:
        return self._out.readline()

    def finish(self, stdin: str = "go\n") -> tuple[int, str]:
        try:
            os.write(self._in_w, stdin.encode())
        except BrokenPipeError:
            pass
        os.close(self._in_w)
        rest = self._out.read()
        self._out.close()
        _, status = os.waitpid(self.pid, 0)
        return status, rest


def children_of_this_process() -> list[int]:
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            found.append(int(entry.name))
    return found


def host_mount_lines() -> list[str]:
    return Path("/proc/self/mountinfo").read_text().splitlines()


def mountinfo_targets(text: str) -> dict[str, tuple[str, str]]:
    """target -> (fstype, per-mount options) from mountinfo text."""
    out = {}
    for line in text.splitlines():
        fields = line.split()
        sep = fields.index("-")
        out[fields[4]] = (fields[sep + 1], fields[5])
    return out


# ---------------------------------------------------------------------------------- process


def test_command_is_pid_1_of_its_own_namespace(rootfs: Path) -> None:
    c = Interactive(rootfs, 'read p rest < /proc/self/stat; echo "$$ $p $PPID"; read x')
    try:
        assert c.readline().split() == ["1", "1", "0"]
        # The host sees the same process under the returned pid, pid 1 in its namespace.
        status_lines = Path(f"/proc/{c.pid}/status").read_text().splitlines()
        nspid = next(line for line in status_lines if line.startswith("NSpid:")).split()[1:]
        assert nspid == [str(c.pid), "1"]
        assert os.readlink(f"/proc/{c.pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
        assert os.readlink(f"/proc/{c.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert os.readlink(f"/proc/{c.pid}/ns/ipc") != os.readlink("/proc/self/ns/ipc")
    finally:
        status, _ = c.finish()
    assert os.waitstatus_to_exitcode(status) == 0


def test_proc_shows_only_the_containers_processes(rootfs: Path) -> None:
    out = sh(rootfs, "sleep 100 & ls /proc; kill %1")
    pids = {int(name) for name in out.split() if name.isdigit()}
    # sh (1), the background sleep and ls: nothing from the host.
    assert 1 in pids and pids <= {1, 2, 3, 4}, pids


def test_exit_status_is_the_commands(rootfs: Path) -> None:
    status, _, _ = run(rootfs, ["sh", "-c", "exit 3"])
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3


def test_sigkill_from_the_host_kills_pid_1(rootfs: Path) -> None:
    pid = n.spawn_container(str(rootfs), ["sleep", "1000"], ["PATH=/bin"])
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_signal_dispositions_are_reset(rootfs: Path) -> None:
    # Python ignores SIGPIPE; the container must start with the default (SigIgn all zero),
    # and with nothing blocked. (No shell: busybox sh ignores SIGQUIT itself.)
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    status, out, _ = run(rootfs, ["cat", "/proc/self/status"])
    assert status == 0
    fields = dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)
    assert int(fields["SigIgn"], 16) == 0
    assert int(fields["SigBlk"], 16) == 0


def test_background_processes_die_with_pid_1(rootfs: Path) -> None:
    c = Interactive(rootfs, "sleep 1000 & echo started; read x")
    pidns = os.readlink(f"/proc/{c.pid}/ns/pid")

    def members() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.readlink(entry / "ns" / "pid") == pidns:
                        found.append(int(entry.name))
                except OSError:
                    pass
        return found

    try:
        assert c.readline() == "started\n"
        assert len(members()) == 2  # sh and the background sleep
    finally:
        status, _ = c.finish()
    assert os.waitstatus_to_exitcode(status) == 0
    assert members() == []


def test_container_dies_with_the_spawning_process(rootfs: Path) -> None:
    """PR_SET_PDEATHSIG: when the process that spawned it is SIGKILLed, so is the container.
    A forked subreaper holds the spawner, so that the orphaned container's status lands
    somewhere this test can read it."""
    report_r, report_w = os.pipe()
    reaper = os.fork()
    if reaper == 0:
        code = 1
        try:
            if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "PR_SET_CHILD_SUBREAPER")
            pid_r, pid_w = os.pipe()
            spawner = os.fork()
            if spawner == 0:
                try:
                    pid = n.spawn_container(str(rootfs), ["sleep", "1000"], ["PATH=/bin"])
                    os.write(pid_w, f"{pid}\n".encode())
                    signal.pause()
                finally:
                    os._exit(1)
            os.close(pid_w)
            container = int(os.read(pid_r, 100))
            os.kill(spawner, signal.SIGKILL)
            os.waitpid(spawner, 0)
            # Reparented to this subreaper. A container that survives is killed after a
            # generous wait, and reported as such.
            for _ in range(1000):
                reaped, status = os.waitpid(container, os.WNOHANG)
                if reaped:
                    break
                time.sleep(0.01)
            else:
                os.kill(container, signal.SIGKILL)
                os.waitpid(container, 0)
                status = -1
            os.write(report_w, f"{status}\n".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(report_w)
    with os.fdopen(report_r) as f:
        report = f.read()
    _, reaper_status = os.waitpid(reaper, 0)
    assert os.waitstatus_to_exitcode(reaper_status) == 0
    status = int(report)
    assert status != -1, "the container outlived the process that spawned it"
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


# ------------------------------------------------------------------------ command and identity


def test_hostname_is_the_containers_own(rootfs: Path) -> None:
    host = socket.gethostname()
    assert sh(rootfs, "hostname", hostname="box1") == "box1\n"
    assert socket.gethostname() == host
    # Without one, a private copy of the host's name.
    assert sh(rootfs, "hostname") == host + "\n"


def test_env_is_exactly_the_one_given(rootfs: Path) -> None:
    env = ["PATH=/bin", "FOO=bar baz", "EMPTY="]
    status, out, _ = run(rootfs, ["env"], env)
    assert status == 0
    assert sorted(out.splitlines()) == sorted(env)


def test_cwd(rootfs: Path) -> None:
    status, out, _ = run(rootfs, ["pwd"], cwd="/work")
    assert status == 0 and out == "/work\n"


def test_command_found_in_the_containers_path_not_the_hosts(rootfs: Path) -> None:
    opt = rootfs / "opt" / "bin"
    opt.mkdir(parents=True)
    tool = opt / "mytool"
    tool.write_text("#!/bin/sh\necho tool ran\n")
    tool.chmod(0o755)
    status, out, _ = run(rootfs, ["mytool"], ["PATH=/nonexistent:/opt/bin:/bin"])
    assert status == 0 and out == "tool ran\n"
    # python3 is on the host's PATH, not in the container.
    assert shutil.which("python3")
    with pytest.raises(FileNotFoundError) as exc:
        run(rootfs, ["python3", "-c", "pass"], ["PATH=/bin:/usr/bin"])
    assert exc.value.filename == "container: exec 'python3'"
    # A slash means no search.
    status, out, _ = run(rootfs, ["/opt/bin/mytool"], ["PATH=/bin"])
    assert status == 0 and out == "tool ran\n"


def test_default_path_without_path_in_env(rootfs: Path) -> None:
    status, out, _ = run(rootfs, ["echo", "hi"], ["FOO=1"])
    assert status == 0 and out == "hi\n"


def test_not_executable_command_is_permission_error(rootfs: Path) -> None:
    (rootfs / "bin" / "data").write_text("not a program\n")
    with pytest.raises(PermissionError) as exc:
        run(rootfs, ["data"])
    assert exc.value.filename == "container: exec 'data'"


def test_uid_gid_and_groups(rootfs: Path) -> None:
    out = sh(rootfs, "cat /proc/self/status", uid=1000, gid=1001, groups=[2000, 2001])
    fields = dict(line.split(":", 1) for line in out.splitlines())
    assert fields["Uid"].split() == ["1000"] * 4
    assert fields["Gid"].split() == ["1001"] * 4
    assert fields["Groups"].split() == ["2000", "2001"]
    assert int(fields["CapEff"], 16) == 0  # root's capabilities went with setuid
    assert sh(rootfs, "id -u; id -g", uid=1000, gid=1001) == "1000\n1001\n"


def test_default_identity_is_root_without_supplementary_groups(rootfs: Path) -> None:
    out = sh(rootfs, "cat /proc/self/status")
    fields = dict(line.split(":", 1) for line in out.splitlines())
    assert fields["Uid"].split() == ["0"] * 4
    assert fields["Groups"].split() == []


# -------------------------------------------------------------------------------------- mounts


@pytest.mark.parametrize("user_namespace", [False, True], ids=["root", "userns"])
def test_dev_has_the_usual_nodes(rootfs: Path, user_namespace: bool) -> None:
    out = sh(rootfs, "stat -c '%n %F %t %T' /dev/null /dev/zero /dev/full /dev/random "
                     "/dev/urandom /dev/tty", user_namespace=user_namespace)
    nodes = {}
    for line in out.splitlines():
        name, rest = line.split(" ", 1)
        kind, major, minor = rest.rsplit(" ", 2)
        assert kind == "character special file", line
        nodes[name] = (int(major, 16), int(minor, 16))
    assert nodes == {
        "/dev/null": (1, 3), "/dev/zero": (1, 5), "/dev/full": (1, 7),
        "/dev/random": (1, 8), "/dev/urandom": (1, 9), "/dev/tty": (5, 0),
    }
    # The nodes work (a bind of the host's in a user namespace, where mknod is refused).
    out = sh(rootfs, "echo x > /dev/null && echo null ok; head -c 7 /dev/zero | wc -c; "
                     "head -c 5 /dev/urandom | wc -c; echo x > /dev/full || echo full refused",
             user_namespace=user_namespace)
    assert out.split("\n")[:4] == ["null ok", "7", "5", "full refused"]
    links = sh(rootfs, "for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done",
               user_namespace=user_namespace)
    assert links.split() == ["/proc/self/fd", "/proc/self/fd/0", "/proc/self/fd/1",
                             "/proc/self/fd/2", "pts/ptmx"]


def test_dev_pts_and_shm_are_mounted(rootfs: Path) -> None:
    mounts = mountinfo_targets(sh(rootfs, "cat /proc/self/mountinfo"))
    fstype, opts = mounts["/dev"]
    assert fstype == "tmpfs" and {"nosuid", "noexec"} <= set(opts.split(","))
    assert mounts["/dev/pts"][0] == "devpts"
    assert mounts["/dev/shm"][0] == "tmpfs"
    assert mounts["/proc"][0] == "proc"
    # /dev/shm is writable by anyone, sticky.
    assert sh(rootfs, "stat -c %a /dev/shm; touch /dev/shm/x && echo ok") == "1777\nok\n"


def test_host_mounts_are_not_visible_inside(rootfs: Path, tmp_path: Path) -> None:
    before_spawn = tmp_path / "host-tmpfs"
    before_spawn.mkdir()
    after_spawn = rootfs / "mnt"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1236k", "sk-host-a", str(before_spawn)],
                   check=True)
    try:
        c = Interactive(rootfs, "echo up; read x; cat /proc/self/mountinfo")
        try:
            assert c.readline() == "up\n"
            # Mounted on the host inside the container's rootfs while it runs: no propagation.
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1240k", "sk-host-b",
                            str(after_spawn)], check=True)
        finally:
            status, inside = c.finish()
        subprocess.run(["umount", str(after_spawn)], check=True)
    finally:
        subprocess.run(["umount", str(before_spawn)], check=True)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "sk-host-a" not in inside and "sk-host-b" not in inside
    # /sys is optional (mounted where the kernel allows it).
    assert set(mountinfo_targets(inside)) - {"/sys"} == {"/", "/proc", "/dev", "/dev/pts",
                                                         "/dev/shm"}


def test_mounts_made_inside_stay_inside(rootfs: Path) -> None:
    c = Interactive(rootfs, "mount -t tmpfs -o size=2348k sk-inside /mnt && "
                            "grep -c sk-inside /proc/self/mountinfo; read x")
    try:
        assert c.readline() == "1\n"
        assert not any("sk-inside" in line for line in host_mount_lines())
        assert not os.path.ismount(rootfs / "mnt")
    finally:
        status, _ = c.finish()
    assert os.waitstatus_to_exitcode(status) == 0
    assert not any("sk-inside" in line for line in host_mount_lines())


def test_mounts_under_the_rootfs_come_along(rootfs: Path, tmp_path: Path) -> None:
    """Volumes: what the caller mounted under the rootfs before spawning is inside (and stays
    writable in a read-only rootfs)."""
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "data").write_text("from the host\n")
    subprocess.run(["mount", "--bind", str(volume), str(rootfs / "mnt")], check=True)
    try:
        out = sh(rootfs, "cat /mnt/data; echo back > /mnt/reply", readonly_rootfs=True)
    finally:
        subprocess.run(["umount", str(rootfs / "mnt")], check=True)
    assert out == "from the host\n"
    assert (volume / "reply").read_text() == "back\n"


def test_boots_on_an_overlay_rootfs(rootfs: Path, tmp_path: Path) -> None:
    """As a storage driver hands it over: the rootfs is itself a mount point."""
    upper, work, merged = (tmp_path / d for d in ("upper", "work", "merged"))
    for d in (upper, work, merged):
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={rootfs},upperdir={upper},workdir={work}", str(merged)],
                   check=True)
    try:
        out = sh(merged, "echo written > /tmp/new; cat /proc/self/mountinfo")
        assert mountinfo_targets(out)["/"][0] == "overlay"
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    assert (upper / "tmp" / "new").read_text() == "written\n"
    assert not (rootfs / "tmp" / "new").exists()
    # The mount points the container needed were made in the upper layer, not the image.
    assert (upper / "proc").is_dir() and not (rootfs / "proc").exists()


@pytest.mark.parametrize("user_namespace", [False, True], ids=["root", "userns"])
def test_readonly_rootfs_refuses_writes(rootfs: Path, user_namespace: bool) -> None:
    status, out, err = run(rootfs, ["sh", "-c", "touch /x; echo $?; touch /dev/shm/y && echo shm"],
                           readonly_rootfs=True, user_namespace=user_namespace)
    assert status == 0
    assert out == "1\nshm\n"
    assert "Read-only file system" in err
    assert not (rootfs / "x").exists()
    # Only the container's view is read-only.
    (rootfs / "host-write").write_text("ok")
    # And without the flag the root is writable.
    sh(rootfs, "touch /x", user_namespace=user_namespace)
    assert (rootfs / "x").exists()


def test_mount_point_symlinked_out_of_the_rootfs_is_refused(rootfs: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (rootfs / "proc").symlink_to(outside)
    with pytest.raises(NotADirectoryError) as exc:
        run(rootfs, ["true"])
    assert exc.value.filename == "container: mkdir /proc"
    assert children_of_this_process() == []


# ------------------------------------------------------------------------------------- network


def interfaces(proc_net_dev: str) -> set[str]:
    return {line.split(":")[0].strip() for line in proc_net_dev.splitlines()[2:]}


def test_private_network_has_only_loopback_up(rootfs: Path) -> None:
    out = sh(rootfs, "cat /proc/net/dev")
    assert interfaces(out) == {"lo"}
    link = sh(rootfs, "ip link show lo")
    assert "UP" in link.split("<", 1)[1].split(">", 1)[0].split(",")


def test_host_network_is_shared_on_request(rootfs: Path) -> None:
    out = sh(rootfs, "cat /proc/net/dev", network=True)
    assert interfaces(out) == interfaces(Path("/proc/net/dev").read_text())


# ----------------------------------------------------------------------------------------- stdio


def test_stdio_fds_are_passed_and_nothing_else(rootfs: Path) -> None:
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    # An inheritable fd of the host process that must not reach the container.
    leak = os.dup2(in_w, 60, inheritable=True)
    try:
        pid = n.spawn_container(
            str(rootfs),
            ["sh", "-c", 'read line; echo "got $line"; echo oops >&2; ls /proc/self/fd'],
            ["PATH=/bin"], stdin=in_r, stdout=out_w, stderr=err_w)
    finally:
        os.close(leak)
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    os.write(in_w, b"hello\n")
    os.close(in_w)
    with os.fdopen(out_r) as out, os.fdopen(err_r) as err:
        out_text, err_text = out.read(), err.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0
    lines = out_text.splitlines()
    assert lines[0] == "got hello"
    assert err_text == "oops\n"
    assert set(lines[1:]) <= {"0", "1", "2", "3"}  # 3: ls's own directory fd


def test_stdio_fds_may_be_permuted(rootfs: Path, tmp_path: Path) -> None:
    # stdin from the fd that will become 1, stdout to the one that will become 0.
    src = tmp_path / "in.txt"
    src.write_text("swapped\n")
    dst = tmp_path / "out.txt"
    a = os.open(src, os.O_RDONLY)
    b = os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644)
    saved0, saved1 = os.dup(0), os.dup(1)
    try:
        os.dup2(b, 0)
        os.dup2(a, 1)
        pid = n.spawn_container(str(rootfs), ["cat"], ["PATH=/bin"], stdin=1, stdout=0)
    finally:
        os.dup2(saved0, 0)
        os.dup2(saved1, 1)
        for fd in (a, b, saved0, saved1):
            os.close(fd)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert dst.read_text() == "swapped\n"


# ------------------------------------------------------------------------------------- errors


def test_missing_command_raises_and_leaves_no_zombie(rootfs: Path) -> None:
    with pytest.raises(FileNotFoundError) as exc:
        n.spawn_container(str(rootfs), ["nosuchcmd", "x"], ["PATH=/bin"])
    assert exc.value.errno == errno.ENOENT
    assert exc.value.filename == "container: exec 'nosuchcmd'"
    assert children_of_this_process() == []


def test_missing_cwd_raises_and_leaves_no_zombie(rootfs: Path) -> None:
    with pytest.raises(FileNotFoundError) as exc:
        n.spawn_container(str(rootfs), ["true"], ["PATH=/bin"], cwd="/no/such/dir")
    assert exc.value.filename == "container: chdir /no/such/dir"
    assert children_of_this_process() == []


def test_bad_arguments(rootfs: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        n.spawn_container(str(rootfs), [], ["PATH=/bin"])
    with pytest.raises(ValueError):
        n.spawn_container(str(rootfs), ["echo", "a\0b"], ["PATH=/bin"])
    with pytest.raises(OSError) as exc:
        n.spawn_container(str(rootfs), ["true"], ["PATH=/bin"], stdin=987)
    assert exc.value.errno == errno.EBADF and exc.value.filename == "container: stdin fd 987"
    with pytest.raises(FileNotFoundError):
        n.spawn_container(str(tmp_path / "missing"), ["true"], ["PATH=/bin"])
    # Only container root is mapped in a user namespace.
    with pytest.raises(OSError) as exc:
        n.spawn_container(str(rootfs), ["true"], ["PATH=/bin"], user_namespace=True, uid=1000)
    assert exc.value.errno == errno.EINVAL and exc.value.filename == "container: setuid 1000"
    assert children_of_this_process() == []


# ------------------------------------------------------------------------------ user namespace


def test_user_namespace_maps_root_to_the_caller(rootfs: Path) -> None:
    c = Interactive(rootfs, "id -u; read x", user_namespace=True)
    try:
        assert c.readline() == "0\n"
        uid_map = Path(f"/proc/{c.pid}/uid_map").read_text().split()
        gid_map = Path(f"/proc/{c.pid}/gid_map").read_text().split()
        assert uid_map == ["0", str(os.geteuid()), "1"]
        assert gid_map == ["0", str(os.getegid()), "1"]
        assert Path(f"/proc/{c.pid}/setgroups").read_text() == "deny\n"
        assert os.readlink(f"/proc/{c.pid}/ns/user") != os.readlink("/proc/self/ns/user")
    finally:
        status, _ = c.finish()
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.fixture
def shared_rootfs() -> Iterator[Path]:
    """A rootfs an unprivileged user can reach (tmp_path's parents are root-only), owned by
    that user as a rootless container's would be."""
    base = Path(tempfile.mkdtemp(prefix="sk-userns-"))
    try:
        os.chmod(base, 0o755)
        root = make_rootfs(base / "rootfs")
        for path in [root, *root.rglob("*")]:
            os.lchown(path, 65534, 65534)
        yield root
    finally:
        shutil.rmtree(base)


def test_user_namespace_from_an_unprivileged_caller(shared_rootfs: Path) -> None:
    """Spawned by a process that has dropped to nobody: root inside, nobody on the host."""
    report_r, report_w = os.pipe()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(report_r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            # Changing uid made this process non-dumpable, which makes /proc/<pid>/uid_map of
            # its children root's; a process started as the user is dumpable.
            libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
            in_r, in_w = os.pipe()
            out_r, out_w = os.pipe()
            pid = n.spawn_container(str(shared_rootfs),
                                    ["sh", "-c", "id -u; cat /proc/self/uid_map; read x"],
                                    ["PATH=/bin"], user_namespace=True, stdin=in_r, stdout=out_w)
            os.close(in_r)
            os.close(out_w)
            out = os.fdopen(out_r)
            inside = out.readline() + out.readline()
            host_uid = [line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                        if line.startswith("Uid:")][0]
            os.write(in_w, b"go\n")
            os.close(in_w)
            _, status = os.waitpid(pid, 0)
            os.write(report_w, f"{status}\n{inside}{host_uid}\n".encode())
            code = 0
        except BaseException as e:
            os.write(report_w, repr(e).encode())
        finally:
            os._exit(code)
    os.close(report_w)
    with os.fdopen(report_r) as f:
        report = f.read().splitlines()
    _, child_status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(child_status) == 0, report
    status, uid_inside, uid_map, host_uid = report
    assert int(status) == 0
    assert uid_inside == "0"
    assert uid_map.split() == ["0", "65534", "1"]
    assert host_uid.split()[1:] == ["65534"] * 4
