"""`storagekit bench compare A/ B/`: two reports side by side (two disks, two versions).

Figures are matched by workload, metric, contender and parameter; each pair gets B's median
as a multiple of A's. Writes compare.json, compare.md and a self-contained compare.html with
both setups (what tells the runs apart) and a plot of the ratios.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from ..fsutil import atomic_write
from .report import fmt, load


def identity(report: dict[str, Any]) -> dict[str, str]:
    """What tells two runs apart, in a few words each."""
    s = report["setup"]
    d, fs = s["disk"], s["filesystem"]
    return {
        "started": report["started"],
        "disk": f"{d.get('disk') or d.get('source')} ({d.get('model', '-')}, "
                f"serial {d.get('serial') or '-'})",
        "filesystem": f"{fs['type']} ({fs['mount_options']}), reflink "
                      f"{'yes' if fs['reflink'] else 'no'}",
        "kernel": s["kernel"],
        "storagekit": s["storagekit_version"],
        "scale": f"{report['scale']['name']}, {report['rounds']} rounds",
    }


def pairs(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    def key(f: dict[str, Any]) -> tuple[str, str, str, str]:
        return f["workload"], f["metric"], f["contender"], f["param"]

    bs = {key(f): f for f in b["figures"]}
    out = []
    for f in a["figures"]:
        g = bs.get(key(f))
        if g is None:
            continue
        ratio = g["median"] / f["median"] if f["median"] and g["median"] is not None else None
        out.append({"workload": f["workload"], "metric": f["metric"],
                    "contender": f["contender"], "param": f["param"], "unit": f["unit"],
                    "a": f["median"], "b": g["median"], "b_over_a": ratio})
    return out


def _plot(rows: list[dict[str, Any]]) -> str | None:
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["b_over_a"] and r["b_over_a"] > 0]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.16 * len(rows) + 1.5))
    vals = [math.log2(r["b_over_a"]) for r in rows]
    ax.barh(range(len(rows)), vals, color=["#c44" if v > 0 else "#37a" for v in vals])
    ax.set_yticks(range(len(rows)), [f"{r['contender']} {r['workload']}/{r['metric']} "
                                     f"{r['param']}" for r in rows], fontsize=6)
    ax.invert_yaxis()
    ax.axvline(0, color="#000", linewidth=0.8)
    ax.set_xlabel("log2(B / A)")
    ax.set_title("each figure of B as a multiple of A's (log2)", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def write(dir_a: Path, dir_b: Path, out: Path) -> dict[str, Any]:
    a, b = load(dir_a), load(dir_b)
    rows = pairs(a, b)
    result = {"a": {"dir": str(dir_a), **identity(a)}, "b": {"dir": str(dir_b), **identity(b)},
              "pairs": rows}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "compare.json", json.dumps(result, indent=1) + "\n")
    lines = ["# storagekit bench: A vs B", "", "| | A | B |", "|---|---|---|"]
    lines += [f"| {k} | {result['a'][k]} | {result['b'][k]} |" for k in result["a"]]
    lines += ["", "| contender | workload/metric | param | A | B | B / A |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['b_over_a']:.3g}" if r["b_over_a"] is not None else "-"
        lines.append(f"| {r['contender']} | {r['workload']}/{r['metric']} | {r['param']} | "
                     f"{fmt(r['a'], r['unit'])} | {fmt(r['b'], r['unit'])} | {ratio} |")
    atomic_write(out / "compare.md", "\n".join(lines) + "\n")
    e = html.escape
    page = ["<!doctype html><html><head><meta charset='utf-8'><title>storagekit bench "
            "compare</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em "
            "auto}td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px}table{border-"
            "collapse:collapse}</style></head><body><h1>storagekit bench: A vs B</h1><table>"
            "<tr><th></th><th>A</th><th>B</th></tr>"]
    page += [f"<tr><td>{e(k)}</td><td>{e(result['a'][k])}</td><td>{e(result['b'][k])}</td></tr>"
             for k in result["a"]]
    page.append("</table>")
    img = _plot(rows)
    if img:
        page.append(f"<h2>Ratios</h2><img alt='ratios' src='{img}'>")
    page.append("<h2>Figures</h2><table><tr><th>contender</th><th>workload/metric</th>"
                "<th>param</th><th>A</th><th>B</th><th>B / A</th></tr>")
    for r in rows:
        ratio = f"{r['b_over_a']:.3g}" if r["b_over_a"] is not None else "-"
        page.append(f"<tr><td>{e(r['contender'])}</td><td>{e(r['workload'])}/"
                    f"{e(r['metric'])}</td><td>{e(r['param'])}</td><td>{e(fmt(r['a'], r['unit']))}"
                    f"</td><td>{e(fmt(r['b'], r['unit']))}</td><td>{ratio}</td></tr>")
    page.append("</table></body></html>")
    atomic_write(out / "compare.html", "\n".join(page))
    return result
