"""Stacks deeper than one mount allows: the bottom of a long chain flattened into one tree.

When a mount would need more lower directories than the kernel allows (500, or what fits one
page with mount(2)), the bottom of the chain is replaced by one flattened, read-only
directory: flat/<LINK of A> holds the merged content of layer A and all its parents, built once
by copying an overlay mount of that chain (with reflink where the filesystem shares extents)
and reused by every layer above A. A is chosen at a depth that is a multiple of FLATTEN_STEP,
so that sibling branches share the same flattened layers; flattening recurses when A's own
chain is too long. A flattened directory stays valid because a layer with children is
committed and never written again; it is deleted with its layer.
"""

from __future__ import annotations

import os

from storagekit import _native

TYPE_CHECKING = False  # the boot path's rule: see storagekit/bootpath.py
if TYPE_CHECKING:
    from collections.abc import Callable

    from .mounting import Mounter

FLATTEN_STEP = 100  # flattened layers sit at depths that are multiples of this


class Flattener:
    """The flat/ cache of one driver home."""

    def __init__(self, home_dir: str, mounter: Mounter,
                 options: Callable[[bool], list[str]]) -> None:
        self.links_prefix = f"{home_dir}/l/"
        self.flat_prefix = f"{home_dir}/flat/"
        self.mounter = mounter
        self.options = options  # the mount options for a volatile flag

    def link_dir(self, link: str) -> str:
        """The lower directory of a layer by its short name: the l/<LINK> symlink, which the
        kernel follows when it resolves a layer path."""
        return self.links_prefix + link

    def fit(self, links: list[str], limit: int) -> list[str]:
        """Lower directories for these layers (short names, uppermost first), flattening the
        bottom of the chain into one cached directory when there are more than `limit`."""
        if len(links) <= limit:
            return [self.link_dir(link) for link in links]
        depth_top = len(links)  # depth of the uppermost layer, the base being depth 1
        cut = -(-(depth_top - (limit - 1)) // FLATTEN_STEP) * FLATTEN_STEP  # rounded up
        cut = min(cut, depth_top - 1)
        keep = depth_top - cut  # layers above the flattened one
        flat = self.flat(links[keep:], limit)
        return [self.link_dir(link) for link in links[:keep]] + [flat]

    def flat(self, links: list[str], limit: int) -> str:
        """flat/<LINK>: the merged content of the layers `links` (a layer and all its parents,
        uppermost first) as one plain tree, built when missing."""
        flat = self.flat_prefix + links[0]
        if os.path.isdir(flat):
            return flat
        import tempfile  # only for deep stacks: not imported on every CLI call

        lowers = self.fit(links, limit)
        tmp_mount = tempfile.mkdtemp(prefix=".flatten-", dir=self.flat_prefix)
        partial = f"{self.flat_prefix}.partial-{links[0]}"
        if os.path.exists(partial):
            _native.remove_tree(partial)
        try:
            self.mounter.mount(tmp_mount, lowers, None, None, self.options(False),
                               readonly=True)
            try:
                _native.copy_tree(tmp_mount, partial)
            finally:
                _native.umount(tmp_mount, _native.MNT_DETACH)
            os.rename(partial, flat)
        finally:
            os.rmdir(tmp_mount)
            if os.path.exists(partial):
                _native.remove_tree(partial)
        return flat

    def drop(self, link: str) -> None:
        """Delete the flattened directory of the layer named link (with its layer)."""
        for d in (self.flat_prefix + link, f"{self.flat_prefix}.partial-{link}"):
            if os.path.exists(d):
                _native.remove_tree(d)

    def collect(self) -> list[str]:
        """Remove what a killed flattening left: its partial copy and its mount point
        (.partial-<LINK>, .flatten-*); the caller holds off every flattening meanwhile."""
        gone = []
        for name in os.listdir(self.flat_prefix):
            path = self.flat_prefix + name
            if name.startswith(".partial-") or name.startswith(".flatten-"):
                _native.umount_tree(path, detach=True)
                _native.remove_tree(path)
                gone.append(path)
        return gone

    def count(self) -> int:
        return sum(1 for n in os.listdir(self.flat_prefix) if not n.startswith("."))
