"""What every command group prints with: --json or human output, tables, sizes, times, and
progress on a terminal.

The JSON a listing prints is a compatibility contract: its keys are those of the records'
as_dict(), documented where the records are defined.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import threading


def emit(args: argparse.Namespace, data: Any, human: Callable[[], object]) -> None:
    """Print data as JSON with --json, else call human() to print it for people."""
    if args.json:
        print_json(data)
    else:
        human()


def print_json(data: Any) -> None:
    import json  # only with --json: not on a container's boot path

    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    """Columns as wide as their widest cell, two spaces apart; None prints empty."""
    cells = [list(map(str, header))] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def human_size(n: int | None) -> str:
    """1536 -> "1.5 KiB"; None -> "-"."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def timestamp(t: float) -> str:
    """A record's time, local: "2024-05-01 12:00:00"."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


class Progress:
    """`with Progress(fd, label):` shows how far fd has been read, on a terminal only
    (stderr); piped or redirected, it prints nothing."""

    def __init__(self, fd: int, label: str) -> None:
        self.fd, self.label = fd, label
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        try:
            st = os.fstat(fd)
            self.total = st.st_size if os.path.stat.S_ISREG(st.st_mode) else 0
        except OSError:
            self.total = 0

    def __enter__(self) -> Progress:
        if self.total and sys.stderr.isatty():
            import threading  # only on a terminal: not on a container's boot path

            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(self._stop,), daemon=True)
            self._thread.start()
        return self

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(0.2):
            try:
                done = os.lseek(self.fd, 0, os.SEEK_CUR)  # shares the offset the reader moves
            except OSError:
                return
            pct = 100 * done / self.total
            sys.stderr.write(f"\r{self.label}: {pct:5.1f}% of {human_size(self.total)}")
            sys.stderr.flush()

    def __exit__(self, *exc: object) -> None:
        if self._thread and self._stop:
            self._stop.set()
            self._thread.join()
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
