"""Images for the runtime's hostile-input tests: the busybox root filesystem with some entries
replaced, imported into a real store, and the installed command run on it."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from cliutil import command
from treeutil import make_tar


def busybox_with(busybox_tar: Path, out: Path, entries: list[dict[str, Any]],
                 drop: tuple[str, ...] = ()) -> Path:
    """A root filesystem tar: busybox's, without the entries named in drop (and what is
    under them), then `entries` (make_tar specs) appended."""
    extra = tarfile.open(fileobj=io.BytesIO(make_tar(entries)))
    with tarfile.open(busybox_tar) as src, extra, tarfile.open(out, "w",
                                                               format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            name = member.name.removeprefix("./").rstrip("/")
            if any(name == d or name.startswith(d + "/") for d in drop):
                continue
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        for member in extra:
            dst.addfile(member, extra.extractfile(member) if member.isfile() else None)
    return out


def sk(root: Path, *args: Any, timeout: float = 120,
       **kw: Any) -> subprocess.CompletedProcess[bytes]:
    """`storagekit --root ROOT ARGS...` as a user runs it; a command that does not end
    within timeout seconds is killed and fails the test."""
    return subprocess.run([command(), "--root", str(root), *map(str, args)],
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def one_line_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The one line a failed command printed on stderr (a failure if it printed more, or
    if it succeeded)."""
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    err = proc.stderr.decode()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("storagekit: "), err
    assert "internal error" not in lines[0], err
    return lines[0]
