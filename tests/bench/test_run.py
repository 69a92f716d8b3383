"""`storagekit bench` end to end at a tiny scale, on a directory of the host's disk and on a
loop xfs filesystem: every driver and baseline measured on every claim, the report's JSON
valid against its schema, the HTML and plots showing the JSON's figures, the setup telling
the two disks apart, nothing left behind, and `bench compare` on the two reports."""

from __future__ import annotations

import base64
import csv
import html
import re

import pytest
from benchutil import TINY, bench, leftovers, report
from loopfs import loop_filesystem

from storagekit.bench import report as rmod
from storagekit.bench.markdown import cell
from storagekit.bench.workloads import MEMCG, METRICS

DRIVERS = ["vfs", "overlay", "aufs", "devicemapper"]
BASELINES = ["host fs", "kernel overlay", "fuse-overlayfs", "ctr run"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny run on the host's disk (a temporary directory) and one on a loop xfs."""
    made = {}
    base = tmp_path_factory.mktemp("bench")
    host_dir = base / "dir"
    host_dir.mkdir()
    bench("--dir", host_dir, *TINY, "-o", base / "out-host")
    assert leftovers(host_dir) == []
    made["host"] = (host_dir, base / "out-host")
    with loop_filesystem("xfs", size_mib=1024) as mnt:
        bench("--dir", mnt, *TINY, "-o", base / "out-xfs")
        assert leftovers(mnt) == []
        made["xfs"] = (mnt, base / "out-xfs")
        yield made


@pytest.fixture(params=["host", "xfs"])
def run(request, runs):
    return runs[request.param]


def test_every_driver_and_baseline_ran(run):
    rep = report(run[1])
    ran = {c["name"]: c for c in rep["contenders"] if c["ran"]}
    assert sorted(ran) == sorted(DRIVERS + BASELINES), rep["contenders"]
    assert len(rep["contenders"]) == len(ran)
    assert rep["complete"] and not rep["interrupted"]
    assert rep["failures"] == []


def _expected(rep, contender: str) -> set[tuple[str, str]]:
    """The metrics every contender must have a figure for."""
    if contender == "ctr run":  # containerd's boot, beside the drivers'
        return {("deploy", "boot_seconds")}
    out = set()
    for workload, metric in METRICS:
        if workload == "datapath" and contender not in (*DRIVERS, "host fs"):
            continue
        if metric == "copy_seconds" and contender not in ("vfs", "host fs"):
            continue
        if metric == "reflink_copy_seconds" and (contender != "host fs"
                                                 or not rep["setup"]["filesystem"]["reflink"]):
            continue
        if metric == "cgroup_cache_bytes" and not (MEMCG / "memory.stat").exists():
            continue
        out.add((workload, metric))
    return out


def test_every_claim_has_figures_and_baselines(run):
    rep = report(run[1])
    for contender in DRIVERS + BASELINES:
        have = {(f["workload"], f["metric"]) for f in rep["figures"]
                if f["contender"] == contender
                and (f["median"] is not None or f["metric"] == "propagate_seconds")}
        missing = _expected(rep, contender) - have
        assert not missing, f"{contender} has no figure for {sorted(missing)}"
    # a curve has a point per N, per depth, per size
    scale = rep["scale"]
    disk = {f["param"] for f in rep["figures"] if f["metric"] == "disk_bytes"
            and f["contender"] == "devicemapper"}
    assert disk == {str(n) for n in scale["ns"]}
    depths = {f["param"] for f in rep["figures"] if f["metric"] == "layers_seconds"
              and f["contender"] == "aufs"}
    assert depths == {str(n) for n in scale["layer_counts"]}
    # ratios to the host fs are there for the time and space figures
    assert all(f["ratio_to_host"] is not None for f in rep["figures"]
               if f["metric"] == "disk_bytes")


def test_figures_say_what_the_drivers_do(run):
    """The mechanisms the report explains, visible in its figures: vfs copies the image for
    each container, the union drivers share it; every driver keeps the image unchanged."""
    rep = report(run[1])

    def median(contender, metric, param=None):
        figs = [f for f in rep["figures"] if f["contender"] == contender
                and f["metric"] == metric and (param is None or f["param"] == param)]
        return figs[-1]["median"]

    n = str(rep["scale"]["ns"][-1])
    assert median("vfs", "disk_bytes", n) > 10 * median("overlay", "disk_bytes", n)
    assert median("vfs", "disk_bytes", n) > 10 * median("aufs", "disk_bytes", n)
    for c in DRIVERS + BASELINES[:-1]:
        assert median(c, "base_unchanged") == 1.0, c
    # a change to the image's own files never reaches a copy or a block snapshot
    assert median("vfs", "seen_fraction") == 0.0
    assert median("devicemapper", "seen_fraction") == 0.0
    assert median("host fs", "seen_fraction") == 0.0


def test_json_validates_against_its_schema(run):
    rep = report(run[1])
    rmod.validate(rep)
    assert rep["schema_version"] == rmod.SCHEMA_VERSION


def test_schema_rejects_a_broken_report(run):
    import jsonschema

    rep = report(run[1])
    del rep["figures"][0]["median"]
    with pytest.raises(jsonschema.ValidationError):
        rmod.validate(rep)


def test_setup_tells_the_disks_apart(runs):
    host, xfs = report(runs["host"][1])["setup"], report(runs["xfs"][1])["setup"]
    assert xfs["filesystem"]["type"] == "xfs"
    assert xfs["filesystem"]["reflink"] is True  # mkfs.xfs -m reflink=1
    assert xfs["disk"]["disk"].startswith("/dev/loop")
    assert xfs["disk"]["loop_backing_file"]
    assert xfs["disk"]["loop_backing_disk"]["filesystem"] == host["filesystem"]["type"]
    assert host["filesystem"]["type"] != "xfs" or host["disk"]["disk"] != xfs["disk"]["disk"]
    for s in (host, xfs):
        assert s["filesystem"]["mount_options"]
        assert s["kernel"] and s["cpu"]["count"] >= 1 and s["memory_bytes"] > 0
        assert s["disk"]["size_bytes"] > 0 and s["disk"]["scheduler"]
        assert set(s["driver_options"]) == set(DRIVERS + BASELINES)
        assert s["driver_options"]["devicemapper"]["dm.blocksize"]
    # reflink copies are measured only where the filesystem has them
    ref = [f for f in report(runs["xfs"][1])["figures"] if f["metric"] == "reflink_copy_seconds"]
    assert ref and ref[0]["median"] > 0


def test_html_shows_the_json(run):
    rep = report(run[1])
    page = (run[1] / "report.html").read_text()
    for f in rep["figures"]:
        assert html.escape(cell(f)) in page, f
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    metrics_with_figures = {(f["workload"], f["metric"]) for f in rep["figures"]}
    assert len(images) == len(metrics_with_figures) + 1  # one plot per metric + the heat map
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "AUFS vs device mapper" in page and "Heat map" in page
    assert "<script" not in page and "http" not in page.replace("https://json-schema", "")
    md = (run[1] / "report.md").read_text()
    assert "## AUFS vs device mapper" in md
    assert rep["setup"]["filesystem"]["type"] in md


def test_csv_holds_every_sample(run):
    rep = report(run[1])
    with open(run[1] / "samples.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(rep["samples"]) > 0
    for row, s in zip(rows, rep["samples"], strict=True):
        assert row["contender"] == s["contender"] and row["metric"] == s["metric"]
        assert (row["value"] == "" and s["value"] is None) or float(row["value"]) == s["value"]


def test_compare_two_reports(runs, tmp_path):
    out = tmp_path / "cmp"
    proc = bench("compare", runs["host"][1], runs["xfs"][1], "-o", out)
    assert "compare.html" in proc.stdout
    import json

    result = json.loads((out / "compare.json").read_text())
    assert "xfs" in result["b"]["filesystem"] and "xfs" not in result["a"]["filesystem"]
    assert result["pairs"]
    a = {(f["workload"], f["metric"], f["contender"], f["param"]): f["median"]
         for f in report(runs["host"][1])["figures"]}
    for p in result["pairs"]:
        assert p["a"] == a[(p["workload"], p["metric"], p["contender"], p["param"])]
        if p["a"] and p["b"] is not None:
            assert p["b_over_a"] == pytest.approx(p["b"] / p["a"])
    page = (out / "compare.html").read_text()
    assert "data:image/png;base64," in page


def test_compare_refuses_a_directory_without_a_report(runs, tmp_path):
    proc = bench("compare", runs["host"][1], tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"storagekit: {tmp_path}/report.json: no report here " \
        "(run storagekit bench -o DIR)"


def test_bad_usage_is_one_line(tmp_path):
    for args, code in ((["--dir", tmp_path / "missing"], 1), ([], 2),
                       (["--dir", tmp_path, "--drivers", "zfs"], 1),
                       (["--dir", tmp_path, "--only", "nope"], 2)):
        proc = bench(*args, "-o", tmp_path / "out", check=False)
        assert proc.returncode == code, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_driver_options_reach_the_drivers_and_the_report(tmp_path):
    work = tmp_path / "dir"
    work.mkdir()
    out = tmp_path / "out"
    bench("--dir", work, *TINY, "--drivers", "devicemapper,overlay", "--only", "disk",
          "--storage-opt", "dm.blocksize=128K", "-o", out)
    rep = report(out)
    assert rep["setup"]["driver_options"]["devicemapper"]["dm.blocksize"] == str(128 << 10)
    assert "dm.blocksize" not in rep["setup"]["driver_options"]["overlay"]
    assert "dm.blocksize=131072" in (out / "report.md").read_text()
    proc = bench("--dir", work, *TINY, "--drivers", "overlay", "--storage-opt",
                 "dm.blocksize=128K", "-o", out, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("storagekit: no driver of the run knows the option "
                                  "'dm.blocksize'")
