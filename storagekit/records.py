"""What the driver contract passes around: layer ids, changes, mounts as data, the outcome of
applying a tar, and the options of a create (graphdriver's CreateOpts).

On a container's boot path (see storagekit/bootpath.py).
"""

from __future__ import annotations

import enum
import re
from collections import namedtuple

from .errors import InvalidArgument

TYPE_CHECKING = False  # the boot path's rule: see storagekit/bootpath.py
if TYPE_CHECKING:
    from typing import Any

# Layer ids name directories: keep them to a safe alphabet (Docker uses 64 hex digits and
# "<id>-init"; chain-ID-derived ids are hex too).
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,199}")


def check_id(layer_id: str) -> str:
    """Return layer_id if it is a valid layer id, else raise InvalidArgument."""
    if not isinstance(layer_id, str) or not _ID_RE.fullmatch(layer_id):
        raise InvalidArgument(
            f"invalid layer id {layer_id!r}: use 1-200 characters from A-Z a-z 0-9 _ . + -, "
            "starting with a letter or digit"
        )
    return layer_id


class ChangeKind(enum.IntEnum):
    """As Docker's archive.ChangeType."""

    MODIFY = 0
    ADD = 1
    DELETE = 2

    @property
    def letter(self) -> str:
        """C, A or D, as `docker diff` prints the kind."""
        return "CAD"[self.value]

    def __repr__(self) -> str:  # help() and reprs of a Change show the letter, not 0/1/2
        return self.letter


class Change(namedtuple("Change", "path kind")):
    """One path a layer changes against its parent, and how (ChangeKind: C, A or D)."""

    path: str
    kind: ChangeKind
    __slots__ = ()

    def __str__(self) -> str:
        return f"{self.kind.letter} {self.path}"


class Mount(namedtuple("Mount", "type source options target")):
    """A mount as data, as a containerd snapshotter returns it (containerd.types.Mount)."""

    type: str
    source: str
    options: list[str]
    target: str
    __slots__ = ()

    def __new__(cls, type: str, source: str, options: list[str] | None = None,
                target: str = "") -> Mount:
        return super().__new__(cls, type, source, list(options or ()), target)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (what --json prints)."""
        d: dict[str, Any] = {"type": self.type, "source": self.source, "options": self.options}
        if self.target:
            d["target"] = self.target
        return d


class ApplyResult(namedtuple("ApplyResult", "size diff_id entries compression")):
    """What applying a layer tar did. ``size`` is what graphdriver's ApplyDiff returns."""

    size: int
    diff_id: str
    entries: int
    compression: str
    __slots__ = ()


class CreateOpts:
    """graphdriver's CreateOpts, and ``volatile``: the layer's content need not survive a
    crash of the host (a container run with --rm, whose layer is removed when it exits), so
    a driver may skip syncing it. A hint: drivers that cannot use it ignore it."""

    def __init__(self, mount_label: str = "", storage_opt: dict[str, str] | None = None,
                 volatile: bool = False):
        self.mount_label = mount_label
        self.storage_opt = dict(storage_opt or {})
        self.volatile = volatile

    def __repr__(self) -> str:
        return (f"CreateOpts(mount_label={self.mount_label!r}, storage_opt={self.storage_opt!r}"
                f", volatile={self.volatile!r})")
