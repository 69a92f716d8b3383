"""report.md: the setup, one table per workload (every figure with its spread and its ratio
to the host filesystem), the AUFS vs device mapper section, and what failed or was skipped."""

from __future__ import annotations

from typing import Any

from . import versus
from .report import fmt, fmt_spread


def setup_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The setup as (label, value) rows; html.py shows the same rows."""
    s = report["setup"]
    d, fs = s["disk"], s["filesystem"]
    disk = d.get("disk") or f"none ({d.get('reason', '')})"
    rows = [
        ("Directory", s["dir"]),
        ("Disk", f"{disk}, model {d.get('model', '-')}, serial {d.get('serial') or '-'}"),
        ("Disk size", fmt(d.get("size_bytes"), "B") if d.get("size_bytes") else "-"),
        ("Rotational / scheduler / queue depth",
         f"{'yes' if d.get('rotational') else 'no'} / {d.get('scheduler', '-')} / "
         f"{d.get('queue_depth') or '-'}"),
    ]
    if d.get("loop_backing_file"):
        under = d.get("loop_backing_disk", {})
        rows.append(("Loop device backed by", f"{d['loop_backing_file']} (on {under.get('disk')}"
                     f", {under.get('filesystem')})"))
    rows += [
        ("Filesystem", f"{fs['type']} on {fs['source']} at {fs['mount_point']}"),
        ("Mount options", fs["mount_options"]),
        ("Reflink (FICLONE)", "yes" if fs["reflink"] else "no"),
        ("Kernel", s["kernel"]),
        ("CPU", f"{s['cpu']['model']} x {s['cpu']['count']}"),
        ("Memory", fmt(s["memory_bytes"], "B") if s.get("memory_bytes") else "-"),
        ("storagekit", s["storagekit_version"]),
        ("Scale / rounds", f"{report['scale']['name']} / {report['rounds']}"),
        ("Page cache", "whole cache dropped (--drop-caches)" if report["drop_caches"]
         else "only the run's own files evicted (POSIX_FADV_DONTNEED)"),
    ]
    if s.get("device"):
        rows.append(("Formatted device", f"{s['device']['device']} as {s['device']['mkfs']}"))
    return rows


def tables(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per workload and metric: the contenders (rows) by parameter (columns)."""
    out = []
    order = [c["name"] for c in report["contenders"] if c["ran"]]
    for m in report["metrics"]:
        figs = [f for f in report["figures"]
                if f["workload"] == m["workload"] and f["metric"] == m["metric"]]
        if not figs:
            continue
        params = sorted({f["param"] for f in figs}, key=versus._param_key)
        rows = []
        for name in order:
            by = {f["param"]: f for f in figs if f["contender"] == name}
            if by:
                rows.append((name, [by.get(p) for p in params]))
        out.append({"metric": m, "params": params, "rows": rows})
    return out


def cell(f: dict[str, Any] | None) -> str:
    if f is None:
        return "n/a"
    text = fmt_spread(f)
    if f["ratio_to_host"] is not None and f["contender"] != "host fs":
        text += f", x{f['ratio_to_host']:.3g}"
    return text


def render(report: dict[str, Any]) -> str:
    lines = ["# storagekit bench report", ""]
    if report["interrupted"]:
        lines += ["**Partial report: the run was interrupted.**", ""]
    lines += [f"Run {report['started']} - {report['finished']} "
              f"({report['duration_seconds']:.0f} s).", "", "## Setup", "",
              "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in setup_lines(report)]
    lines += ["", "## Contenders", "", "| contender | kind | ran | options |", "|---|---|---|---|"]
    for c in report["contenders"]:
        ran = "yes" if c["ran"] else f"no: {c['reason']}"
        opts = ", ".join(f"{k}={v}" for k, v in (c.get("options") or {}).items())
        lines.append(f"| {c['name']} | {c['kind']} | {ran} | {opts} |")
    lines += ["", "Each cell: median (min-max) over the rounds, and `xR`: the figure as a "
              "multiple of the host filesystem's (no layering) in the same run.", ""]
    current = None
    titles = {w["name"]: w["title"] for w in report["workloads"]}
    for t in tables(report):
        m = t["metric"]
        if m["workload"] != current:
            current = m["workload"]
            lines += [f"## {titles.get(current, current)}", ""]
        lines += [f"### {m['title']} ({m['better']} is better)", "",
                  "| contender | " + " | ".join(p or "-" for p in t["params"]) + " |",
                  "|---" * (len(t["params"]) + 1) + "|"]
        for name, cells in t["rows"]:
            lines.append(f"| {name} | " + " | ".join(cell(f) for f in cells) + " |")
        lines.append("")
    lines += ["## AUFS vs device mapper", "",
              f"aufs here: {versus.backend(report, 'aufs')}; devicemapper here: "
              f"{versus.backend(report, 'devicemapper')}.", "",
              "| point | aufs | devicemapper | dm / aufs | why |", "|---|---|---|---|---|"]
    for p in versus.points(report):
        ratio = f"{p['dm_over_aufs']:.3g}" if p["dm_over_aufs"] is not None else "-"
        lines.append(f"| {p['workload']} {p['metric']} {p['param']} | {cell(p['aufs'])} | "
                     f"{cell(p['devicemapper'])} | {ratio} | {p['mechanism']} |")
    lines.append("")
    if report["failures"]:
        lines += ["## Failures", ""]
        lines += [f"- round {f['round'] + 1}, {f['workload']} on {f['contender']}: {f['error']}"
                  for f in report["failures"]]
        lines.append("")
    return "\n".join(lines)
