"""report.html: one self-contained page (plots are PNGs embedded as base64, no external
file or script): setup, a driver x workload heat map of ratios to the host filesystem, per
metric a bar chart with spread or a scaling curve beside its table, the AUFS vs device
mapper section. Every number in a table is the JSON's figure, formatted by report.fmt."""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

from . import versus
from .markdown import cell, setup_lines, tables

CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 7px;
font-size:13px;vertical-align:top}th{background:#eee}.partial{background:#fdd;padding:.5em}
img{max-width:100%}.why{max-width:520px}"""


X_LABELS = {"layers_seconds": "image layers", "size_seconds": "image size (MiB)"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    _plt().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _scale(unit: str) -> tuple[float, str]:
    return {"s": (1000.0, "ms"), "B": (1 / (1 << 20), "MiB")}.get(unit, (1.0, unit))


def plot_metric(t: dict[str, Any]) -> str:
    """A scaling curve when the metric has several numeric parameters, else bars; the
    whiskers are min and max over the rounds."""
    plt = _plt()
    m = t["metric"]
    mult, label = _scale(m["unit"])
    fig, ax = plt.subplots(figsize=(7, 3.2))
    numeric = len(t["params"]) > 1 and all(versus._param_key(p) for p in t["params"])
    if numeric:
        xs = [versus._param_key(p) for p in t["params"]]
        for name, cells in t["rows"]:
            pts = [(x, f) for x, f in zip(xs, cells, strict=True) if f and f["median"] is not None]
            if not pts:
                continue
            ys = [f["median"] * mult for _, f in pts]
            lo = [(f["median"] - f["min"]) * mult for _, f in pts]
            hi = [(f["max"] - f["median"]) * mult for _, f in pts]
            ax.errorbar([x for x, _ in pts], ys, yerr=[lo, hi], marker="o", capsize=3,
                        label=name)
        ax.set_xlabel(X_LABELS.get(m["metric"], "containers"))
        values = [f["median"] for _, cells in t["rows"] for f in cells
                  if f and f["median"] is not None and f["median"] > 0]
        if values and max(values) / min(values) > 50:
            ax.set_yscale("log")  # a copy per container next to a few KiB: both readable
        ax.legend(fontsize=8)
    else:
        names, ys, lo, hi = [], [], [], []
        for name, cells in t["rows"]:
            for f in cells:
                if f and f["median"] is not None:
                    names.append(name if len(t["params"]) == 1 else f"{name} {f['param']}")
                    ys.append(f["median"] * mult)
                    lo.append((f["median"] - f["min"]) * mult)
                    hi.append((f["max"] - f["median"]) * mult)
        ax.bar(range(len(ys)), ys, yerr=[lo, hi], capsize=3,
               color=["#888" if n.startswith(("host", "kernel", "fuse")) else "#37a"
                      for n in names])
        ax.set_xticks(range(len(ys)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(label)
    ax.set_title(f"{m['title']} ({m['better']} is better)", fontsize=9)
    return _png(fig)


def heatmap(report: dict[str, Any]) -> str | None:
    """Contender x metric, each cell the figure as a multiple of the host filesystem's (at a
    metric's largest parameter); coloured by how much better (blue) or worse (red)."""
    plt = _plt()
    names = [c["name"] for c in report["contenders"] if c["ran"] and c["name"] != "host fs"]
    better = {(m["workload"], m["metric"]): m["better"] for m in report["metrics"]}
    cols: list[tuple[str, str]] = []
    cells: dict[tuple[str, tuple[str, str]], float] = {}
    for f in report["figures"]:
        key = (f["workload"], f["metric"])
        if f["ratio_to_host"] is None or f["contender"] not in names or f["unit"] == "bool":
            continue
        top = max((g["param"] for g in report["figures"] if (g["workload"], g["metric"]) == key
                   and g["contender"] == f["contender"] and g["ratio_to_host"] is not None),
                  key=versus._param_key)
        if f["param"] != top:
            continue
        if key not in cols:
            cols.append(key)
        cells[(f["contender"], key)] = f["ratio_to_host"]
    if not cols:
        return None
    grid = [[math.nan] * len(cols) for _ in names]
    for i, n in enumerate(names):
        for j, key in enumerate(cols):
            r = cells.get((n, key))
            if r and r > 0:
                # log2 of "times better than the host": positive is better
                grid[i][j] = math.log2(r) * (1 if better[key] == "higher" else -1)
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(cols) + 2), 0.5 * len(names) + 2))
    ax.imshow(grid, cmap="RdBu", vmin=-4, vmax=4, aspect="auto")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xticks(range(len(cols)), [f"{w}/{m}" for w, m in cols], rotation=60, ha="right",
                  fontsize=7)
    for i, n in enumerate(names):
        for j, key in enumerate(cols):
            r = cells.get((n, key))
            if r is not None:
                ax.text(j, i, f"{r:.2g}", ha="center", va="center", fontsize=6)
    ax.set_title("figure / host fs figure (blue: better than the host fs, red: worse)",
                 fontsize=9)
    return _png(fig)


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def render(report: dict[str, Any]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>storagekit bench "
             f"{e(report['started'])}</title><style>{CSS}</style></head><body>",
             "<h1>storagekit bench report</h1>"]
    if report["interrupted"]:
        parts.append("<p class='partial'><b>Partial report: the run was interrupted.</b></p>")
    parts.append(f"<p>Run {e(report['started'])} - {e(report['finished'])} "
                 f"({report['duration_seconds']:.0f} s).</p><h2>Setup</h2>")
    parts.append(_table(["", ""], [[k, str(v)] for k, v in setup_lines(report)]))
    parts.append("<h2>Contenders</h2>")
    parts.append(_table(["contender", "kind", "ran", "options"], [
        [c["name"], c["kind"], "yes" if c["ran"] else f"no: {c['reason']}",
         ", ".join(f"{k}={v}" for k, v in (c.get("options") or {}).items())]
        for c in report["contenders"]]))
    hm = heatmap(report)
    if hm:
        parts.append(f"<h2>Heat map: each driver against the host filesystem</h2>"
                     f"<img alt='heat map' src='{hm}'>")
    parts.append("<p>Each cell: median (min-max) over the rounds, and xR: the figure as a "
                 "multiple of the host filesystem's (no layering) in the same run.</p>")
    titles = {w["name"]: w["title"] for w in report["workloads"]}
    current = None
    for t in tables(report):
        m = t["metric"]
        if m["workload"] != current:
            current = m["workload"]
            parts.append(f"<h2>{e(titles.get(current, current))}</h2>")
        parts.append(f"<h3>{e(m['title'])} ({e(m['better'])} is better)</h3>")
        parts.append(f"<img alt='{e(m['workload'])}/{e(m['metric'])}' src='{plot_metric(t)}'>")
        parts.append(_table(["contender", *[p or "-" for p in t["params"]]],
                            [[name, *[cell(f) for f in cells]] for name, cells in t["rows"]]))
    parts.append("<h2>AUFS vs device mapper</h2>")
    parts.append(f"<p>aufs here: {e(versus.backend(report, 'aufs'))}; devicemapper here: "
                 f"{e(versus.backend(report, 'devicemapper'))}.</p>")
    rows = []
    for p in versus.points(report):
        ratio = f"{p['dm_over_aufs']:.3g}" if p["dm_over_aufs"] is not None else "-"
        rows.append([f"{p['workload']} {p['metric']} {p['param']}", cell(p["aufs"]),
                     cell(p["devicemapper"]), ratio, p["mechanism"]])
    parts.append(_table(["point", "aufs", "devicemapper", "dm / aufs", "why"], rows))
    if report["failures"]:
        parts.append("<h2>Failures</h2><ul>")
        parts += [f"<li>round {f['round'] + 1}, {e(f['workload'])} on {e(f['contender'])}: "
                  f"{e(f['error'])}</li>" for f in report["failures"]]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
