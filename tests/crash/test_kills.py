"""kill -9 of a command at a random moment, then the next command: whatever the moment, the
next command (or `storagekit prune`) finishes or collects what the dead one left — no half-made
or orphan layer, no container record without its layer, no temporary file, no mount, loop
device or daemon — on every driver, several rounds each."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

from crowdutil import daemons_under, loops_under, mounts_under
from imageutil import write_oci
from treeutil import make_tar

ROUNDS = 5


def image_layers(n: int = 3) -> list[bytes]:
    """Layers big enough that importing them takes a while (so a kill lands inside)."""
    return [make_tar([{"name": f"l{i}", "type": "dir"}] + [
        {"name": f"l{i}/f{j}", "data": os.urandom(256 << 10)} for j in range(8)])
        for i in range(n)]


def killed_at_random(crowd, args: list[str], longest: float) -> int:
    """Start the command and SIGKILL it after a random part of `longest` seconds; its exit
    status (negative: it was killed)."""
    proc = subprocess.Popen(crowd.argv(*args), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(random.uniform(0, longest))
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


def timed(crowd, *args: str) -> float:
    start = time.monotonic()
    crowd.run(*args)
    return time.monotonic() - start


def store_state(crowd) -> dict:
    """What the next command sees (opening the store collects what the dead left)."""
    return {
        "layers": json.loads(crowd.run("--json", "layer", "ls").stdout),
        "images": {i["name"]: i for i in json.loads(crowd.run("--json", "image", "ls").stdout)},
        "containers": json.loads(crowd.run("--json", "ps").stdout),
    }


def assert_clean(crowd, images: dict[str, int]) -> None:
    """Only the layers of these images (name -> layer count) remain, and nothing else."""
    state = store_state(crowd)
    assert set(state["images"]) == set(images)
    assert state["containers"] == []
    assert len(state["layers"]) == sum(images.values()), state["layers"]
    assert all(layer["kind"] == "committed" for layer in state["layers"])
    assert crowd.run("--json", "prune").returncode == 0
    assert mounts_under(crowd.root) == []
    assert loops_under(crowd.root) == []
    assert daemons_under(crowd.root) == []


def driver_leftovers(crowd) -> list[str]:
    """Partial, doomed and temporary entries anywhere in the driver's home."""
    found = []
    for top, dirs, files in os.walk(crowd.root / crowd.driver):
        if "/diff" in top or "/dir/" in top or top.endswith("/mnt"):
            dirs[:] = [d for d in dirs if d.startswith(".")]
        for name in dirs + files:
            if name.startswith((".partial-", ".removing-", ".flatten-")) or ".tmp-" in name:
                found.append(os.path.join(top, name))
    return found


def test_killed_imports(crowd, tmp_path):
    layout = tmp_path / "image"
    write_oci(layout, image_layers(), name="big:1")
    for _ in range(2):  # the second one times a warm store (devicemapper's pool is made)
        longest = timed(crowd, "image", "import", str(layout), "--name", "big:1")
        crowd.run("image", "rm", "big:1")
    outcomes = []
    for _ in range(ROUNDS):
        outcomes.append(killed_at_random(crowd, ["image", "import", str(layout), "--name",
                                                 "big:1"], longest))
        # either the import finished before the kill, or nothing of it is left
        finished = "big:1" in store_state(crowd)["images"]
        assert_clean(crowd, {"big:1": 3} if finished else {})
        assert driver_leftovers(crowd) == []
        crowd.run("image", "import", str(layout), "--name", "big:1")  # the store works on
        crowd.run("image", "rm", "big:1")
    assert any(code == -signal.SIGKILL for code in outcomes), "no kill landed inside"
    assert_clean(crowd, {})


def test_killed_runs(crowd, busybox_tar):
    crowd.run("image", "import", str(busybox_tar), "--name", "busybox")
    longest = timed(crowd, "run", "--rm", "busybox", "/bin/true")
    for _ in range(ROUNDS):
        killed_at_random(crowd, ["run", "--rm", "busybox", "/bin/sleep", "0.3"], longest + 0.3)
        assert_clean(crowd, {"busybox:latest": 1})  # reaped at once, no grace period
    for _ in range(ROUNDS):  # a kept container whose removal is killed
        crowd.run("run", "--name", "kept", "busybox", "/bin/true")
        longest = timed(crowd, "run", "--name", "probe", "busybox", "/bin/true") / 2
        crowd.run("rm", "probe")
        killed_at_random(crowd, ["rm", "kept"], longest)
        names = [c["name"] for c in json.loads(crowd.run("--json", "ps").stdout)]
        if "kept" in names:  # killed before it began: the container is whole, rm works
            crowd.run("rm", "kept")
        assert_clean(crowd, {"busybox:latest": 1})


def test_killed_exports(crowd, busybox_tar, tmp_path):
    crowd.run("image", "import", str(busybox_tar), "--name", "busybox")
    out = tmp_path / "out"
    out.mkdir()
    longest = timed(crowd, "image", "export", "busybox", "-o", str(out / "probe.tar"))
    for i in range(ROUNDS):
        killed_at_random(crowd, ["image", "export", "busybox", "-o", str(out / f"x{i}.tar")],
                         longest)
        crowd.run("image", "ls")  # the next command collects the dead export's staging
        hidden = [n for n in os.listdir(out) if n.startswith(".")]  # partial outputs, staging
        assert hidden == [], hidden
        tmp = [n for n in os.listdir("/tmp") if n.startswith(".storagekit-export-")
               and n.split("-")[2] != str(os.getpid())]
        assert not [n for n in tmp if not os.path.exists(f"/proc/{n.split('-')[2]}")]
        if (out / f"x{i}.tar").exists():  # it finished before the kill: then it is whole
            subprocess.run(["tar", "-tf", str(out / f"x{i}.tar")], check=True,
                           capture_output=True)
    assert_clean(crowd, {"busybox:latest": 1})
