"""`storagekit bench`: the drivers compared on the user's own disk.

    setupinfo.py   what the figures were measured on (disk, filesystem, host, versions)
    scale.py       --quick / --full sizes, and the data sets every contender gets
    contenders.py  the drivers and the baselines (host filesystem, kernel overlay,
                   fuse-overlayfs), all behind one small interface
    ctrbase.py     the ctr run baseline (a private containerd)
    workloads.py   the measurements, one implementation each (bench/ uses them too)
    runner.py      rounds, interleaving, progress, interruption
    report.py      report.json (schema.json), samples.csv, figure formatting
    markdown.py    report.md
    html.py        report.html with its plots
    versus.py      the AUFS vs device mapper section
    compare.py     two reports side by side
    device.py      --device: formatting a whole device for a run
"""
