"""Turn a pytest-benchmark JSON file into the ratio table the project reports.

    python3 -m pytest bench --benchmark-only --benchmark-json=bench/results/run.json
    python3 bench/report.py bench/results/run.json

For every group, each entry's median time is shown beside the group's baseline (the entry whose
name names a tool that is not storagekit: cp, tar, mount, ...) and the ratio baseline/entry:
above 1.0 means storagekit is faster. Groups that compare depths (mount time by layer count)
show the ratio to the shallowest entry instead.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict


def _param(name: str) -> str:
    m = re.search(r"\[(.*)\]", name)
    return m.group(1) if m else name


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
        # a series over stack depth: every entry's parameters carry a number
        depth_group = "mount" in group and all(
            re.search(r"\d+", _param(e["name"])) for e in entries)
        if depth_group:
            entries.sort(key=lambda e: int(re.findall(r"\d+", _param(e["name"]))[-1]))
            base = entries[0]
        else:
            base = next((e for e in entries if "storagekit" not in _param(e["name"])), entries[0])
        bmed = base["stats"]["median"]
        for e in entries:
            med = e["stats"]["median"]
            if depth_group:
                ratio = f"{med / bmed:6.2f}x the shallowest"
            else:
                ratio = f"{bmed / med:6.2f} (baseline/this; >1 = faster)"
            print(f"  {_param(e['name']):<40} median {med * 1000:10.2f} ms   {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
