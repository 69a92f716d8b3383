"""containerd's own snapshotter test suite against storagekit's server, on every driver,
through containerd's proxy client (the code containerd runs for a proxy plugin)."""

from __future__ import annotations

from pathlib import Path

import gosuite
import pytest

# Skipped by the suite itself in containerd 1.6 ("rename test still fails on some kernels").
SKIPPED_UPSTREAM = {"Rename"}


@pytest.fixture(scope="session")
def suite_binary(tmp_path_factory) -> Path:
    return gosuite.build(tmp_path_factory.mktemp("gosuite") / "snapshotter.test")


def test_containerd_snapshotter_suite(snapshotter, suite_binary, tmp_path, record_property):
    verdicts, output = gosuite.run(suite_binary, snapshotter.socket, snapshotter.name,
                                   tmp_path / "suite")
    counts = {v: sorted(c for c, x in verdicts.items() if x == v) for v in ("PASS", "FAIL",
                                                                         "SKIP")}
    record_property("suite_counts", {v: len(c) for v, c in counts.items()})
    print(f"{snapshotter.driver}: {len(counts['PASS'])} passed, {len(counts['FAIL'])} failed, "
          f"{len(counts['SKIP'])} skipped of {len(verdicts)}")
    assert not counts["FAIL"], "\n".join(
        f"--- {case}:\n{gosuite.case_log(output, case)}" for case in counts["FAIL"])
    assert set(counts["SKIP"]) == SKIPPED_UPSTREAM, counts["SKIP"]
    assert len(counts["PASS"]) == len(verdicts) - len(SKIPPED_UPSTREAM) >= 20
    # Every case's cleanup removed what it made, so nothing is left in the store or mounted.
    assert snapshotter.layers() == []
    assert snapshotter.layer_mounts() == []
