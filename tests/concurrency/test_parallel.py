"""Many processes on one store at once, as containerd and dockerd call it: parallel imports of
one image (and of two images sharing a base layer) and parallel `run --rm` of one image, on
every driver, several rounds. Every command must succeed and nothing may be left behind."""

from __future__ import annotations

import json

from crowdutil import daemons_under, loops_under, mounts_under
from imageutil import three_layers, write_oci
from treeutil import make_tar

ROUNDS = 3


def assert_nothing_left(crowd, images: set[str]) -> None:
    """Only the images' layers remain: no container, no mount, no loop device, no daemon."""
    layers = json.loads(crowd.run("--json", "layer", "ls").stdout)
    assert not [lay for lay in layers if lay["kind"] != "committed"], layers
    containers = json.loads(crowd.run("--json", "ps").stdout)
    assert containers == []
    listed = {i["name"] for i in json.loads(crowd.run("--json", "image", "ls").stdout)}
    assert listed == images
    assert mounts_under(crowd.root) == []
    assert loops_under(crowd.root) == []
    assert daemons_under(crowd.root) == []


def failures(results: list[tuple[int, str]]) -> list[str]:
    return [f"exit {code}: {err}" for code, err in results if code != 0]


def test_parallel_imports_of_one_image(crowd, tmp_path):
    layout = tmp_path / "image"
    write_oci(layout, three_layers(), name="shared:1")
    for round_ in range(ROUNDS):
        results = crowd.together([["image", "import", str(layout), "--name", "shared:1"]] * 8)
        assert failures(results) == [], f"round {round_}"
        layers = json.loads(crowd.run("--json", "layer", "ls").stdout)
        assert len(layers) == 3  # stored once, whoever won
        crowd.run("image", "rm", "shared:1")
        assert json.loads(crowd.run("--json", "layer", "ls").stdout) == []
    assert_nothing_left(crowd, set())


def test_parallel_imports_of_images_sharing_a_base(crowd, tmp_path):
    base, *_ = three_layers()
    names = []
    argvs = []
    for i in range(8):
        layout = tmp_path / f"image{i}"
        write_oci(layout, [base, make_tar([{"name": f"own{i}", "data": b"x" * i}])],
                  name=f"img{i}:1")
        names.append(f"img{i}:1")
        argvs.append(["image", "import", str(layout), "--name", f"img{i}:1"])
    for round_ in range(ROUNDS):
        assert failures(crowd.together(argvs)) == [], f"round {round_}"
        layers = json.loads(crowd.run("--json", "layer", "ls").stdout)
        assert len(layers) == 9  # one shared base, eight tops
        crowd.run("image", "rm", *names)
    assert_nothing_left(crowd, set())


def test_parallel_boots(crowd, busybox_tar):
    crowd.run("image", "import", str(busybox_tar), "--name", "busybox")
    for round_ in range(ROUNDS):
        results = crowd.together([["run", "--rm", "busybox", "/bin/true"]] * 32)
        assert failures(results) == [], f"round {round_}"
        assert_nothing_left(crowd, {"busybox:latest"})
