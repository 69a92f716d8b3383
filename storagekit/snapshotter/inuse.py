"""Is a snapshot's storage mounted by someone (containerd, a container) right now? containerd
mounts the mounts we hand out itself, so the store's own mount counts do not see it: the
kernel's mount table does. Remove refuses such a snapshot (FailedPrecondition, which
containerd's garbage collector logs and retries later) rather than pull its storage from
under a running container.

What is recognised, per shape of mount (as service.py hands them out):
  * a block device (devicemapper): a filesystem mounted from that device;
  * overlay with an upperdir: an overlay mount with that upperdir (or workdir);
  * a bind of a directory: a mount whose root is that directory (or inside it);
  * the union engine (fuse.*): a mount an engine daemon with that top branch serves.
  * a read-only overlay (a view, a committed layer): an overlay mount with its own
    directory's link among its lowerdirs (the kernel shows them as containerd passed them,
    absolute or relative to the directory containerd chdir()ed into: the links' names are
    unique).
"""

from __future__ import annotations

import os
import stat

from storagekit import _native
from storagekit.driver import Mount


def _mountinfo() -> list[tuple[str, str, str, str, str, str]]:
    """(major:minor, root, mount point, fstype, source, super options) of every mount, from
    the one mount-table reader (libmount, in the native core: it unescapes the fields and
    keeps names that are not UTF-8, which any host mount may have)."""
    return [(f"{m['major']}:{m['minor']}", m["root"], m["target"], m["fstype"], m["source"],
             m["fs_options"]) for m in _native.mount_table()]


def _dev(st: os.stat_result, block: bool) -> str:
    dev = st.st_rdev if block else st.st_dev
    return f"{os.major(dev)}:{os.minor(dev)}"


def _bind_users(path: str, table: list) -> list[str]:
    try:
        dev = _dev(os.stat(path), False)
    except OSError:
        return []
    # path as its filesystem's root sees it: through the mount that holds it
    holders = [r for r in table if r[0] == dev and (path == r[2] or path.startswith(
        r[2].rstrip("/") + "/"))]
    if not holders:
        return []
    holder = max(holders, key=lambda r: len(r[2]))
    inside = os.path.normpath(os.path.join(holder[1], os.path.relpath(path, holder[2])))
    return [r[2] for r in table if r[0] == dev and r is not holder
            and (r[1] == inside or r[1].startswith(inside + "/"))]


def _engine_mounts(branch: str, table: list) -> list[str]:
    """Mount points that a union engine daemon with this top branch serves (a daemon
    whose mount is gone may be on its way out: not a user)."""
    from storagekit.engines import union

    targets = {r[2] for r in table}
    return [m for m in union.mounts_with_branch(branch) if m in targets]


def _lower_names(super_options: str) -> set[str]:
    for option in super_options.split(","):
        if option.startswith("lowerdir="):
            return {os.path.basename(p) for p in option[len("lowerdir="):].split(":")}
    return set()


def users(mounts: list[Mount]) -> list[str]:
    """Where the storage of a snapshot with these mounts is mounted now (mount points, or
    the description of a daemon); [] if nowhere that can be told."""
    table = _mountinfo()
    found: list[str] = []
    for m in mounts:
        options = dict(o.split("=", 1) for o in m.options if "=" in o)
        if m.source.startswith("/dev/"):
            try:
                st = os.stat(m.source)
            except OSError:
                continue
            if stat.S_ISBLK(st.st_mode):
                dev = _dev(st, True)
                found += [r[2] for r in table if r[0] == dev]
        elif m.type == "overlay" and "upperdir" in options:
            wanted = {f"upperdir={options['upperdir']}", f"workdir={options.get('workdir')}"}
            found += [r[2] for r in table if r[3] == "overlay"
                      and wanted & set(r[5].split(","))]
        elif m.type == "overlay" and "lowerdir" in options:
            # a read-only overlay: its own directory is the first lower one, a link of the
            # driver's l/ directory with a unique name; containerd may pass the lowerdirs
            # relative to l/ (after a chdir, for long stacks), so names are compared
            own = os.path.basename(options["lowerdir"].split(":")[0])
            found += [r[2] for r in table if r[3] == "overlay" and own in _lower_names(r[5])]
        elif m.type == "bind":
            found += _bind_users(os.path.abspath(m.source), table)
        elif m.type.startswith(("fuse.", "fuse3.")) and "br" in options:
            top = options["br"].split(":")[0].rsplit("=", 1)[0]
            found += _engine_mounts(top, table)
    return found
