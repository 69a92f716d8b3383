"""Running the installed `storagekit` command on a store, as a user runs it."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from cliutil import command


def sk(root: Any, *args: Any, input: bytes | None = None,
       check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """`storagekit --root ROOT ARGS...`; with check, a failure fails the test with its stderr."""
    proc = subprocess.run([command(), "--root", str(root), *map(str, args)],
                          input=input, capture_output=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"storagekit {' '.join(map(str, args))} failed: "
                             f"{proc.stderr.decode()}")
    return proc


def js(root: Any, *args: Any, **kw: Any) -> Any:
    """The JSON that `storagekit --root ROOT --json ARGS...` prints."""
    return json.loads(sk(root, "--json", *args, **kw).stdout)


def one_line_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The one line a failed command printed on stderr (a failure if it printed more)."""
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.decode()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("storagekit: "), err
    return lines[0]
