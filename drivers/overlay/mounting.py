"""How an overlay stack is mounted: its options, and the two ways to hand them to the kernel.

The new mount API (fsopen("overlay"), one fsconfig "lowerdir+" per layer, fsmount,
move_mount) has no limit on the option string, so a stack is bounded only by the kernel's 500
lower directories. mount(2) takes the options as one page: there the lower directories are
named by their short l/<LINK> symlinks relative to the driver home (the mount is made from
inside it), which fits about 130 of them.

Options: index=off (a reused upper directory must not fail with EBUSY), userxattr in a user
namespace, redirect_dir=off and metacopy=off where the kernel defaults them on (both would put
things in the upper directory that a tar cannot carry), volatile on request.
"""

from __future__ import annotations

import os

from storagekit import _native
from storagekit.errors import StorageError

from .host import module_param

OVL_MAX_STACK = 500  # the kernel's limit of lower directories (fs/overlayfs/params.h)
LINK_LEN = 26        # the length of a layer's short name (l/<LINK>)
PAGE = os.sysconf("SC_PAGE_SIZE")


def mount_options(userxattr: bool, volatile: bool) -> list[str]:
    """The options every overlay mount of the driver gets (besides the directories)."""
    opts = []
    if module_param("index") is not None:
        opts.append("index=off")
    if userxattr:
        opts.append("userxattr")
    if module_param("redirect_dir") == "Y":
        opts.append("redirect_dir=off")
    if module_param("metacopy") == "Y":
        opts.append("metacopy=off")
    if volatile:
        opts.append("volatile")
    return opts


class Mounter:
    """Mounts overlay stacks for one driver home, with the new mount API where the kernel
    has it (mount_api "auto" or "new") or mount(2) ("legacy")."""

    def __init__(self, home_dir: str, mount_api: str, max_lowers: int) -> None:
        self.home_dir = home_dir
        self.max_lowers = max_lowers
        self._new_api_works: bool | None = None if mount_api == "auto" else (
            mount_api == "new")

    def new_api(self) -> bool:
        if self._new_api_works is None:
            self._new_api_works = _native.has_new_mount_api()
        return self._new_api_works

    def lower_limit(self) -> int:
        """How many lower directories one mount may have."""
        if self.new_api():
            return self.max_lowers
        # mount(2): "lowerdir=l/<26>:l/<26>..." plus absolute upper/work paths in one page.
        fixed = len(",upperdir=,workdir=,") + 2 * (len(self.home_dir) + 100) + 64
        return max(2, min(self.max_lowers, (PAGE - 1 - fixed) // (LINK_LEN + 3)))

    def mount(self, target: str, lowers: list[str], upper: str | None, work: str | None,
              options: list[str], readonly: bool = False) -> None:
        """Mount the stack on target: lowers uppermost first, no upper for a read-only one."""
        if self.new_api():
            _native.fsmount_overlay(target, lowers, upper, work, options, readonly)
            return
        home = self.home_dir + "/"
        short = [os.path.relpath(p, self.home_dir) for p in lowers]
        parts = [*options, "lowerdir=" + ":".join(short)]
        if upper:
            assert work is not None
            parts += [f"upperdir={upper.removeprefix(home)}", f"workdir={work.removeprefix(home)}"]
        data = ",".join(parts)
        if len(data) >= PAGE:
            raise StorageError(
                f"overlay mount options for {target} are {len(data)} bytes, over one page; "
                "the legacy mount(2) path cannot mount this stack"
            )
        flags = _native.MS_RDONLY if readonly else 0
        _native.mount_in_dir(self.home_dir, "overlay", target, "overlay", flags, data)
