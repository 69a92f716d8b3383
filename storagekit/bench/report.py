"""report.json (its schema: schema.json beside this file), samples.csv and report.md.

report.json is a compatibility contract: SCHEMA_VERSION changes with any change to its shape,
and schema.json documents every field. A figure is the median of a metric's samples over the
rounds for one contender and one parameter (N containers, L layers, S MiB ...), with min, max
and quartiles as its spread, and its ratio to the host filesystem's figure from the same run
(value / host: below 1 is less time or less space than no layering at all).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

from ..fsutil import atomic_write
from .contenders import HOST
from .scale import Scale
from .workloads import METRICS, WORKLOADS, Context

SCHEMA = "storagekit-bench-report"
SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("schema.json")


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def figures(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for s in samples:
        groups.setdefault((s["workload"], s["metric"], s["contender"], s["param"]), []).append(s)
    out = []
    for (workload, metric, contender, param), group in groups.items():
        values = [s["value"] for s in group if s["value"] is not None]
        notes = sorted({s["note"] for s in group if s["note"]})
        fig: dict[str, Any] = {
            "workload": workload, "metric": metric, "contender": contender, "param": param,
            "unit": group[0]["unit"], "samples": len(values),
            "median": None, "min": None, "max": None, "q1": None, "q3": None,
            "ratio_to_host": None, "note": "; ".join(notes),
        }
        if values:
            q1, q3 = _quartiles(values)
            fig.update(median=statistics.median(values), min=min(values), max=max(values),
                       q1=q1, q3=q3)
        out.append(fig)
    host = {(f["workload"], f["metric"], f["param"]): f["median"]
            for f in out if f["contender"] == HOST}
    for f in out:
        base = host.get((f["workload"], f["metric"], f["param"]))
        if f["median"] is not None and base:
            f["ratio_to_host"] = f["median"] / base
    return out


def build(opts: Any, scale: Scale, rounds: int, setup: dict[str, Any],
          contenders: list[dict[str, Any]], ctx: Context | None, started: float,
          interrupted: bool) -> dict[str, Any]:
    samples = [dataclasses.asdict(s) for s in (ctx.samples if ctx else [])]
    # a workload may record another's metric (disk also times starting N containers)
    measured = {(s["workload"], s["metric"]) for s in samples}
    shown = {w for w, _ in measured} | set(opts.workloads)
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "complete": not interrupted,
        "interrupted": interrupted,
        "started": _iso(started),
        "finished": _iso(time.time()),
        "duration_seconds": round(time.time() - started, 3),
        "command": list(opts.argv),
        "scale": scale.as_dict(),
        "rounds": rounds,
        "drop_caches": opts.drop_caches,
        "setup": setup,
        "contenders": contenders,
        "workloads": [{"name": w.name, "title": w.title} for w in WORKLOADS
                      if w.name in shown],
        "metrics": [{"workload": w, "metric": m, "unit": d.unit, "better": d.better,
                     "title": d.title} for (w, m), d in METRICS.items()
                    if w in opts.workloads or (w, m) in measured],
        "figures": figures(samples),
        "failures": list(ctx.failures) if ctx else [],
        "steps": list(ctx.steps) if ctx else [],
        "samples": samples,
    }


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def validate(report: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless report matches schema.json."""
    import jsonschema

    jsonschema.validate(report, json.loads(SCHEMA_FILE.read_text()))


def load(directory: Path) -> dict[str, Any]:
    from ..errors import InvalidArgument

    path = directory / "report.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidArgument(f"{path}: no report here (run storagekit bench -o DIR)") from None
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"{path}: not JSON ({e})") from None
    if data.get("schema") != SCHEMA:
        raise InvalidArgument(f"{path}: not a storagekit bench report")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise InvalidArgument(f"{path}: report schema version {data.get('schema_version')}, "
                              f"this storagekit reads {SCHEMA_VERSION}")
    return data


def _num(v: float) -> str:
    """Three significant digits, never in exponent form (1000, not 1e+03)."""
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def fmt(value: float | None, unit: str) -> str:
    """A figure as the report shows it (the tests find these strings in the HTML)."""
    if value is None:
        return "-"
    if unit == "s":
        return f"{_num(value * 1000)} ms" if value < 1 else f"{_num(value)} s"
    if unit == "B":
        for u, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if abs(value) >= size:
                return f"{_num(value / size)} {u}"
        return f"{value:.0f} B"
    if unit == "MiB/s":
        return f"{value:.4g} MiB/s"
    if unit == "fraction":
        return f"{value * 100:.0f}%"
    if unit == "bool":
        return "yes" if value >= 0.5 else "NO"
    return f"{value:.4g} {unit}"


def fmt_spread(f: dict[str, Any]) -> str:
    if f["median"] is None:
        return "-"
    text = fmt(f["median"], f["unit"])
    if f["samples"] > 1 and f["unit"] != "bool" and f["min"] != f["max"]:
        text += f" ({fmt(f['min'], f['unit'])}-{fmt(f['max'], f['unit'])})"
    return text


def write_all(report: dict[str, Any], out: Path) -> None:
    from . import html, markdown

    atomic_write(out / "report.json", json.dumps(report, indent=1).encode() + b"\n")
    write_csv(report, out / "samples.csv")
    atomic_write(out / "report.md", markdown.render(report).encode())
    atomic_write(out / "report.html", html.render(report).encode())


def write_csv(report: dict[str, Any], path: Path) -> None:
    fields = ["workload", "metric", "contender", "param", "round", "value", "unit", "note"]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for s in report["samples"]:
            w.writerow(s)
    tmp.replace(path)
