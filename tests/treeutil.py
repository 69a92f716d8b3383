"""Helpers for tests: build layer tars and describe directory trees as the kernel sees them."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

# xattrs that drivers use for their own bookkeeping and that are not part of a layer's content
_BOOKKEEPING_XATTRS = ("trusted.overlay.", "user.overlay.")


def xattrs(path: str | os.PathLike[str]) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for name in names:
        if name.startswith(_BOOKKEEPING_XATTRS):
            continue
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            pass
    return out


def describe(root: str | os.PathLike[str], *, times: bool = True) -> dict[str, dict[str, Any]]:
    """Every entry under root (not root itself) with type, mode, owner, size, content digest,
    symlink target, device number, xattrs and (for non-directories) mtime in ns. Hardlinked
    entries share a `link_group` (the first path of the group)."""
    root = Path(root)
    result: dict[str, dict[str, Any]] = {}
    inodes: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = "/" + os.path.relpath(full, root)
            st = os.lstat(full)
            entry: dict[str, Any] = {
                "type": stat.S_IFMT(st.st_mode),
                "mode": stat.S_IMODE(st.st_mode),
                "uid": st.st_uid,
                "gid": st.st_gid,
                "xattrs": xattrs(full),
            }
            if stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    entry["sha256"] = hashlib.sha256(f.read()).hexdigest()
                entry["size"] = st.st_size
                if st.st_nlink > 1:
                    entry["link_group"] = inodes.setdefault((st.st_dev, st.st_ino), rel)
            elif stat.S_ISLNK(st.st_mode):
                entry["target"] = os.readlink(full)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                entry["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            if times and not stat.S_ISDIR(st.st_mode):
                entry["mtime_ns"] = st.st_mtime_ns
            result[rel] = entry
    return result


def make_tar(entries: list[dict[str, Any]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar from entry specs: {"name", "type": "file"|"dir"|"symlink"|"hardlink"|"fifo"|
    "char"|"block", "data", "mode", "uid", "gid", "mtime", "link", "xattrs": {name: str},
    "devmajor", "devminor"}."""
    types = {
        "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "char": tarfile.CHRTYPE,
        "block": tarfile.BLKTYPE,
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for e in entries:
            info = tarfile.TarInfo(e["name"])
            kind = e.get("type", "file")
            info.type = types[kind]
            info.mode = e.get("mode", 0o755 if kind == "dir" else 0o644)
            info.uid = e.get("uid", 0)
            info.gid = e.get("gid", 0)
            info.mtime = e.get("mtime", 1_700_000_000)
            info.linkname = e.get("link", "")
            info.devmajor = e.get("devmajor", 0)
            info.devminor = e.get("devminor", 0)
            if e.get("xattrs"):
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e["xattrs"].items()}
            data = e.get("data", b"") if kind == "file" else None
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [m.name.rstrip("/") for m in tar.getmembers()]
