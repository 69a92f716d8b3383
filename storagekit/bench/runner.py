"""A run: contenders made, rounds interleaved, progress shown, everything undone.

Rounds are interleaved: round r runs every workload on every contender, the contenders'
order rotated by r, so no contender always runs first (cold) or last (after the others
filled the page cache). Ctrl-C (SIGINT) or SIGTERM stops the run between two steps or in the
middle of one; what was measured so far becomes a partial report, and every container,
mount, loop device and engine daemon the run made is released before the command returns.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import registry
from ..errors import InvalidArgument, StorageError
from . import contenders as cmod
from . import setupinfo
from .scale import SCALES, DataSets, Scale
from .workloads import WORKLOADS, Context, prepare

DRIVERS = ("vfs", "overlay", "aufs", "devicemapper")


@dataclass
class Options:
    dir: Path
    out: Path
    drivers: tuple[str, ...] = DRIVERS
    scale: str = "quick"
    rounds: int | None = None
    drop_caches: bool = False
    workloads: tuple[str, ...] = tuple(w.name for w in WORKLOADS)
    device: dict[str, Any] | None = None  # what --device formatted, when it was given
    storage_opts: dict[str, str] = field(default_factory=dict)  # to the drivers that know them
    argv: list[str] = field(default_factory=list)


class Progress:
    """One status line on a terminal (stderr): the step, how far, the time left. Nothing
    when stderr is not a terminal."""

    def __init__(self, total: int, stream: Any = None) -> None:
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()

    def step(self, label: str) -> None:
        if not self.tty:
            return
        elapsed = time.monotonic() - self.t0
        left = "" if not self.done else \
            f", about {_duration(elapsed / self.done * (self.total - self.done))} left"
        self.stream.write(f"\r\033[K[{self.done}/{self.total}{left}] {label}")
        self.stream.flush()

    def advance(self) -> None:
        self.done += 1

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt as SIGINT does; both are ignored once cleanup
    starts (a second Ctrl-C must not leave a half-released contender)."""
    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _ignore_interrupts() -> tuple[Any, Any]:
    return (signal.signal(signal.SIGINT, signal.SIG_IGN),
            signal.signal(signal.SIGTERM, signal.SIG_IGN))


def run(opts: Options) -> dict[str, Any]:
    """Run the benchmark; the report (also written to opts.out, partial if interrupted)."""
    from . import report

    if not opts.dir.is_dir():
        raise InvalidArgument(f"--dir {opts.dir}: no such directory")
    unknown = set(opts.drivers) - set(DRIVERS)
    if unknown:
        raise InvalidArgument(f"unknown driver {sorted(unknown)[0]!r} "
                              f"(known: {', '.join(DRIVERS)})")
    known = {k for d in opts.drivers for k in registry.driver_class(d).option_help}
    for key in opts.storage_opts:
        if key not in known:
            raise InvalidArgument(f"no driver of the run knows the option {key!r} "
                                  f"(known: {', '.join(sorted(known)) or 'none'})")
    scale: Scale = SCALES[opts.scale]
    rounds = opts.rounds or scale.rounds
    opts.out.mkdir(parents=True, exist_ok=True)
    work = opts.dir / f"storagekit-bench-{os.getpid()}"
    work.mkdir()
    started = time.time()
    made: list[cmod.Contender] = []
    entries: list[dict[str, Any]] = []
    interrupted = False
    ctx: Context | None = None
    progress: Progress | None = None
    setup = setupinfo.record(opts.dir, {})
    try:
        with _interruptible():
            for name in opts.drivers:
                ok, why = registry.driver_class(name).probe(work)
                entries.append({"name": name, "kind": "driver", "ran": ok,
                                "reason": "" if ok else why})
            for name, why in cmod.available_baselines().items():
                entries.append({"name": name, "kind": "baseline", "ran": why is None,
                                "reason": why or ""})
            ctx = Context(work, scale, DataSets(work / "data", scale), opts.drop_caches,
                          setup["filesystem"]["reflink"])
            selected = [w for w in WORKLOADS if w.name in opts.workloads]
            for e in entries:
                if e["ran"]:
                    helps = (registry.driver_class(e["name"]).option_help
                             if e["kind"] == "driver" else {})
                    c = cmod.make(e["name"], work / e["name"].replace(" ", "-"),
                                  {k: v for k, v in opts.storage_opts.items() if k in helps})
                    made.append(c)
            progress = Progress(len(made) + rounds * sum(
                1 for w in selected for c in made if w.applies(c)))
            for c in list(made):
                progress.step(f"making the images on {c.name}")
                t = time.monotonic()
                e = next(e for e in entries if e["name"] == c.name)
                try:
                    prepare(ctx, c)
                except (StorageError, OSError, RuntimeError,
                        subprocess.CalledProcessError) as err:
                    # a contender that cannot even be set up is reported, not measured
                    e.update(ran=False, reason=f"setup failed: {type(err).__name__}: {err}")
                    made.remove(c)
                    c.close()
                    progress.total -= sum(1 for w in selected if w.applies(c)) * rounds
                    continue
                finally:
                    progress.advance()
                ctx.steps.append({"round": None, "workload": "setup", "contender": c.name,
                                  "seconds": round(time.monotonic() - t, 3)})
                e["options"] = c.options()
                if isinstance(c, cmod.DriverContender):
                    e["status"] = dict(c.driver.status())
            for r in range(rounds):
                ctx.round = r
                order = made[r % len(made):] + made[:r % len(made)] if made else []
                for w in selected:
                    for c in order:
                        if not w.applies(c):
                            continue
                        progress.step(f"round {r + 1}/{rounds}: {w.name} on {c.name}")
                        t = time.monotonic()
                        try:
                            w.run(ctx, c)
                        except (StorageError, OSError, RuntimeError, ValueError,
                                subprocess.CalledProcessError) as err:
                            ctx.fail(w.name, c, err)
                        ctx.steps.append({"round": r, "workload": w.name, "contender": c.name,
                                          "seconds": round(time.monotonic() - t, 3)})
                        progress.advance()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        handlers = _ignore_interrupts()
        try:
            if progress is not None:
                progress.finish()
            for c in made:
                with contextlib.suppress(Exception):
                    c.close()
            cmod.rm_tree(work)
        finally:
            signal.signal(signal.SIGINT, handlers[0])
            signal.signal(signal.SIGTERM, handlers[1])
    setup["driver_options"] = {e["name"]: e.get("options", {}) for e in entries}
    if opts.device:
        setup["device"] = opts.device
    rep = report.build(opts, scale, rounds, setup, entries, ctx, started, interrupted)
    report.write_all(rep, opts.out)
    return rep
