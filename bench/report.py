"""Turn a pytest-benchmark JSON file into the ratio table the project reports.

    python3 -m pytest bench --benchmark-only --benchmark-json=bench/results/run.json
    python3 bench/report.py bench/results/run.json

For every group, each entry's median time is shown beside the group's baseline (the entry a
benchmark marks with extra_info["baseline"]: cp, GNU tar, ctr run, ...) as baseline/entry:
above 1.0 means storagekit is faster. Groups that compare stack depths (extra_info["depth"])
show each time as a multiple of the shallowest instead.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict


def main(path: str) -> int:
    with open(path) as f:
        data = json.load(f)
    groups: dict[str, list[dict]] = defaultdict(list)
    for b in data["benchmarks"]:
        groups[b["group"] or b["name"]].append(b)
    machine = data.get("machine_info", {})
    print(f"# {machine.get('node', '')} {machine.get('cpu', {}).get('brand_raw', '')}")
    for group, entries in groups.items():
        print(f"\n## {group}")
        if all("depth" in e.get("extra_info", {}) for e in entries):
            # a series over stack depth: each entry against the shallowest
            entries.sort(key=lambda e: e["extra_info"]["depth"])
            base = entries[0]["stats"]["median"]
            for e in entries:
                med = e["stats"]["median"]
                print(f"  depth {e['extra_info']['depth']:>5}   median {med * 1000:9.2f} ms"
                      f"   {med / base:6.2f}x depth {entries[0]['extra_info']['depth']}")
            continue
        base_entry = next((e for e in entries if e.get("extra_info", {}).get("baseline")), None)
        size_base = next((e for e in entries if e.get("extra_info", {}).get("size_baseline")),
                         base_entry)
        for e in entries:
            med = e["stats"]["median"]
            line = f"  {e['name']:<60} median {med * 1000:9.2f} ms"
            if base_entry is not None and e is not base_entry:
                ratio = base_entry["stats"]["median"] / med
                line += f"   {ratio:5.2f}x the baseline's speed"
            elif e is base_entry:
                line += "   (baseline)"
            print(line)
            _print_sizes(e, size_base)
    return 0


def _print_figures(e: dict, base_entry: dict | None) -> None:
    """The figures a workload of storagekit/bench recorded (extra_info "METRIC[PARAM]" -> the
    rounds' values: bench/test_claims.py): their median, and its multiple of the baseline's."""
    base = (base_entry or {}).get("extra_info", {})
    for key, values in e.get("extra_info", {}).items():
        if not isinstance(values, list):
            continue
        got = sorted(v for v in values if v is not None)
        if not got:
            print(f"      {key:<40} -")
            continue
        med = statistics.median(got)
        line = f"      {key:<40} {med:14.6g}   ({got[0]:.4g}-{got[-1]:.4g})"
        ref = sorted(v for v in base.get(key, []) if v is not None)
        if ref and statistics.median(ref) and e is not base_entry:
            line += f"   {med / statistics.median(ref):6.3g}x the baseline's"
        print(line)


def _print_sizes(e: dict, base_entry: dict | None) -> None:
    """Measures other than time (extra_info "*_bytes": disk, page cache), in MiB, with their
    multiple of the baseline's."""
    _print_figures(e, base_entry)
    for key, value in e.get("extra_info", {}).items():
        if isinstance(value, list):
            continue
        if not key.endswith("_bytes"):
            continue
        line = f"      {key[:-6]:<40} {value / (1 << 20):12.1f} MiB"
        base = (base_entry or {}).get("extra_info", {}).get(key)
        if base and e is not base_entry:
            line += f"   {value / base:6.2f}x the baseline's"
        print(line)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
