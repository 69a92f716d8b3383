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
        for e in entries:
            med = e["stats"]["median"]
            line = f"  {e['name']:<60} median {med * 1000:9.2f} ms"
            if base_entry is not None and e is not base_entry:
                ratio = base_entry["stats"]["median"] / med
                line += f"   {ratio:5.2f}x the baseline's speed"
            elif e is base_entry:
                line += "   (baseline)"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
