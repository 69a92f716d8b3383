"""containerd's snapshotter test suite (snapshots/testsuite, from Debian's
golang-github-containerd-containerd-dev) as a test binary: gotest/proxy_test.go built in GOPATH
mode against /usr/share/gocode with go 1.19, and its verdicts read from `go test -v` output."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

GOCODE = Path("/usr/share/gocode")
SUITE = GOCODE / "src/github.com/containerd/containerd/snapshots/testsuite"
HARNESS = Path(__file__).resolve().parent / "gotest"
# The suite's cases, as `t.Run` names them (containerd 1.6's snapshots/testsuite).
VERDICT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): TestSnapshotter/(\w+) ", re.M)


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    # GOPATH mode: Debian packages Go sources for GOPATH, not as modules.
    env.update(GO111MODULE="off", GOPATH=str(GOCODE), GOFLAGS="", CGO_ENABLED="1")
    if "GOCACHE" not in env and "HOME" not in env and "XDG_CACHE_HOME" not in env:
        env["GOCACHE"] = "/var/tmp/storagekit-gocache"
    return env


def build(out: Path) -> Path:
    """Compile the harness into the test binary `out`."""
    go = shutil.which("go") or "/usr/lib/go/bin/go"
    if not os.access(go, os.X_OK):
        pytest.skip("go is missing: install golang-go (scripts/bootstrap.sh)")
    if not SUITE.is_dir():
        pytest.skip(f"{SUITE} is missing: install golang-github-containerd-containerd-dev")
    proc = subprocess.run([go, "test", "-c", "-o", str(out), "."], cwd=HARNESS, env=go_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"the Go suite does not build:\n{proc.stdout}{proc.stderr}"
    return out


def run(binary: Path, socket: str, name: str, workdir: Path,
        parallel: int = 4) -> tuple[dict[str, str], str]:
    """Run the suite against the server at socket; each case's verdict (PASS, FAIL, SKIP),
    and the whole output."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TMPDIR=str(workdir))  # the suite's scratch dirs, under the test's
    proc = subprocess.run([str(binary), "-test.root", "-test.v", "-test.count=1",
                           f"-test.parallel={parallel}", "-test.timeout=15m",
                           "-storagekit.socket", socket, "-storagekit.name", name],
                          env=env, capture_output=True, text=True, timeout=1000)
    output = proc.stdout + proc.stderr
    verdicts = {case: verdict for verdict, case in VERDICT.findall(output)}
    assert verdicts, f"the suite reported no case (exit {proc.returncode}):\n{output[-5000:]}"
    return verdicts, output


_NOISE = ("helpers_unix.go:33: unmount ", "helpers.go:66: ")  # the suite's unmounts, dir dumps


def case_log(output: str, case: str) -> str:
    """What `go test -v` printed for one case: its sections (a parallel case's lines follow
    its `=== RUN`/`=== CONT` header), less the suite's unmount and directory-dump lines."""
    lines, mine = [], False
    for line in output.splitlines():
        if line.startswith("=== "):
            mine = line.split()[-1] == f"TestSnapshotter/{case}"
        elif mine and not any(n in line for n in _NOISE):
            lines.append(line)
    return "\n".join(lines[:60])
