"""The host ids of a container run with --userns, and its layer's shift into them.

`run --userns` maps container ids 0..COUNT-1 onto host ids FIRST..FIRST+COUNT-1: the
subordinate ids that /etc/subuid and /etc/subgid (shadow-utils' format, NAME_OR_UID:FIRST:COUNT)
give the `storagekit` user, else root. Container root is then an unprivileged host user: a file
it writes lands on disk owned by FIRST, not by host root, and nothing it does reaches what the
host's root owns.

Image layers are owned on disk as the image says (root's files by 0) and stay so: they are
shared by every container. The container's own layer is shifted before it starts: every owner
id below COUNT becomes FIRST+id (ids the range cannot hold are left as they are: the container
sees them as the overflow id). chown clears set-id bits and file capabilities: both are put
back. On a driver whose layer copies a file up on a change of owner (overlay, the union
engine), the shift copies the image's files into the container's layer once.
"""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

from .errors import InvalidArgument

SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"
#: Whose subordinate ids are used, in order of preference.
OWNERS = ("storagekit", "root", "0")
#: Ids the kernel accepts: (uid_t)-1 is "no change".
ID_LIMIT = 2**32 - 1
CAPABILITY = "security.capability"


class IdRange(NamedTuple):
    first: int  # the host id of container id 0
    count: int


def host_range(path: str) -> IdRange:
    """The range of subordinate ids that path (/etc/subuid or /etc/subgid) gives the first
    of OWNERS it names. InvalidArgument when it names none, or gives one a range that
    holds host root or ids past the kernel's."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    found: dict[str, str] = {}
    for line in lines:
        owner, _, rest = line.strip().partition(":")
        if owner in OWNERS:
            found.setdefault(owner, rest)
    owner = next((o for o in OWNERS if o in found), None)
    if owner is None:
        raise InvalidArgument(
            f"--userns needs host ids for the container: add a line such as "
            f"'storagekit:100000:65536' to {SUBUID} and {SUBGID}")
    first, _, count = found[owner].partition(":")
    # FIRST >= COUNT: a shifted id is never one to shift, so a shift done twice (a hardlink
    # met again, a file that a copy-up split from its other names) changes nothing.
    if not (first.isdigit() and count.isdigit()) or not 0 < int(count) <= int(first) \
            or int(first) + int(count) > ID_LIMIT:
        raise InvalidArgument(
            f"{path}: {owner}:{found[owner]} is not a range of unprivileged ids for "
            f"--userns (FIRST:COUNT, FIRST at least COUNT, FIRST+COUNT at most {ID_LIMIT})")
    return IdRange(int(first), int(count))


def host_ranges() -> tuple[IdRange, IdRange]:
    """The uid and gid ranges of a --userns container."""
    return host_range(SUBUID), host_range(SUBGID)


def _shifted(value: int, ids: IdRange) -> int:
    return ids.first + value if value < ids.count else value


def _shift_entry(path: str, uids: IdRange, gids: IdRange) -> bool:
    st = os.lstat(path)
    uid, gid = _shifted(st.st_uid, uids), _shifted(st.st_gid, gids)
    if (uid, gid) == (st.st_uid, st.st_gid):
        return False
    caps = None
    if stat.S_ISREG(st.st_mode):
        try:
            caps = os.getxattr(path, CAPABILITY, follow_symlinks=False)
        except OSError:  # none (ENODATA), or a filesystem without xattrs
            caps = None
    os.chown(path, uid, gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
        os.chmod(path, stat.S_IMODE(st.st_mode))
    if caps is not None:
        os.setxattr(path, CAPABILITY, caps, follow_symlinks=False)
    return True


def shift_ownership(root: str, uids: IdRange, gids: IdRange) -> int:
    """Shift the owners of root and everything under it into the ranges (symlinks are not
    followed; host_range makes a second shift of an entry a no-op). Returns how many entries
    changed."""
    changed = int(_shift_entry(root, uids, gids))
    # A stack, not os.walk, which recurses in Python 3.11: an image may nest directories
    # deeper than the interpreter's recursion limit.
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                changed += _shift_entry(entry.path, uids, gids)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return changed
