"""The overlay driver: layers stacked by the kernel's overlayfs.

Layout under the driver home (in the spirit of Docker's overlay2)::

    layers/<id>/diff/        the layer's own files: its upper directory; whiteouts in
                             overlay's format (char device 0/0, trusted.overlay.opaque)
    layers/<id>/link         the layer's short name LINK (26 characters)
    layers/<id>/lower        "l/<parent LINK>:l/<grandparent LINK>:..." uppermost first;
                             absent for a base layer
    layers/<id>/work/        overlay's work directory (layers with a parent)
    layers/<id>/merged/      where get() mounts the layer
    layers/<id>/committed    the layer is read-only: made by create() (an image layer, a
                             view), committed, or given a child (whose content depends on
                             it); it is mounted read-only (only lower directories; a base
                             layer as a read-only bind mount of its diff on merged/)
    layers/<id>/volatile     the layer was created volatile (CreateOpts): it is mounted
                             with overlay's volatile option
    layers/<id>/volatile-boot  the boot id of the host when the layer was last mounted
                             volatile
    empty/                   an empty directory: the lower directory of a layer whose root is
                             opaque when nothing else is left below it (overlay needs one)
    l/<LINK>                 symlink to ../layers/<id>/diff (short paths for mount(2))
    flat/<LINK>/             cache: the merged content of the layer named LINK and all its
                             parents as one plain tree (see "More than 500 layers")
    layers/.partial-<id>     a layer being created (renamed when complete)

Mounting. A writable base layer is not mounted: get() returns its diff directory (a read-only
one is bind-mounted read-only on merged/). Any other layer is an overlay mount of its parents'
diff directories (lowerdir, uppermost first) with its own diff as upperdir, or — once
committed — its own diff as the top lower directory and no upper.
Lower directories are named by their l/<LINK> symlinks, so mounting reads one `lower` file
however deep the chain is.
A layer whose diff/ root carries the opaque xattr (its tar had a root ".wh..wh..opq") hides
everything of its parents; the kernel ignores that xattr on a layer's root, so mounts leave
the layers below such a layer out of lowerdir (and its diff carries the marker again).
How the stack is handed to the kernel (new mount API or mount(2)) and with which options
is mounting.py's job; host checks are host.py's.

Volatile mounts. overlay then never syncs the upper directory: neither on fsync nor, which is
what matters for a short container, when the mount goes, where it would otherwise sync the
whole backing filesystem. The kernel marks such a work directory (work/work/incompat/
volatile) and refuses to mount it again, since after a crash its upper directory may be
incomplete. The driver clears the mark when the layer was last mounted during this boot of
the host (nothing was lost), and otherwise refuses to mount the layer.

More than 500 layers. When a mount would need more lower directories than one mount allows,
the bottom of the chain is replaced by one flattened, read-only directory (flatten.py).

Diffs. Between a layer and its direct parent, diff, apply and size are native: the diff
directory is exported or filled directly, converting between overlay's whiteouts and OCI's.
For any other parent the naive diff (mount and compare) is used. changes() is always naive.
"""

from __future__ import annotations

import contextlib
import os

from storagekit import _native
from storagekit.driver import CreateOpts, Driver, Mount, check_id
from storagekit.errors import InvalidArgument, LayerExists, LayerNotFound, StorageError
from storagekit.fsutil import read_text
from storagekit.hostinfo import backing_fs
from storagekit.options import bool_option
from storagekit.refs import boot_id

from . import host
from .flatten import Flattener
from .mounting import LINK_LEN, OVL_MAX_STACK, Mounter, mount_options

_LINK_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _write_text(path: str, text: str) -> None:
    # Records inside a layer's partial directory: the rename of the directory makes them
    # visible all at once, so each needs no atomic write of its own.
    with open(path, "w") as f:
        f.write(text)


class OverlayDriver(Driver):
    name = "overlay"
    priority = 30
    option_help = {
        "overlay.mount_api": "auto (new mount API, else mount(2)), new, or legacy (mount(2))",
        "overlay.volatile": "mount with volatile: copy-up does not fsync (default false)",
        "overlay.max_lowers": "lower directories per mount before the bottom of a chain is "
        "flattened (default and maximum 500)",
    }

    def __init__(self, home, options=None):
        super().__init__(home, options)
        self.mount_api = self.options.get("overlay.mount_api", "auto")
        if self.mount_api not in ("auto", "new", "legacy"):
            raise InvalidArgument(
                f"overlay.mount_api must be auto, new or legacy, not {self.mount_api!r}"
            )
        self.volatile = bool_option(self.options, "overlay.volatile", False)
        try:
            self.max_lowers = int(self.options.get("overlay.max_lowers", OVL_MAX_STACK))
        except ValueError:
            raise InvalidArgument("overlay.max_lowers must be a number") from None
        if not 2 <= self.max_lowers <= OVL_MAX_STACK:
            raise InvalidArgument(f"overlay.max_lowers must be between 2 and {OVL_MAX_STACK}")
        self.userxattr = host.in_user_namespace()
        self.dialect = "overlay-user" if self.userxattr else "overlay"  # type: ignore[misc]
        # Paths are str, joined by concatenation: they are hot here, and pathlib is not
        # imported on a container's boot path (see Driver.home).
        self._layers_prefix = f"{self.home_dir}/layers/"
        self._links_prefix = f"{self.home_dir}/l/"
        for sub in ("layers", "l", "flat", "empty"):
            with contextlib.suppress(FileExistsError):
                os.mkdir(f"{self.home_dir}/{sub}", 0o700)
        self.mounter = Mounter(self.home_dir, self.mount_api, self.max_lowers)
        self.flattener = Flattener(self.home_dir, self.mounter, self._mount_options)

    # ------------------------------------------------------------------ host support

    @classmethod
    def probe(cls, root):
        return host.probe(root)

    # ------------------------------------------------------------------ paths and records

    def _dir(self, layer_id: str) -> str:
        return self._layers_prefix + check_id(layer_id)

    def _diff(self, layer_id: str) -> str:
        return self._dir(layer_id) + "/diff"

    def _merged(self, layer_id: str) -> str:
        return self._dir(layer_id) + "/merged"

    def path(self, layer_id: str) -> str:
        if self.parent(layer_id) is None and not self._committed(layer_id):
            return self._diff(layer_id)
        return self._merged(layer_id)

    def exists(self, layer_id: str) -> bool:
        return os.path.isfile(self._dir(layer_id) + "/link")

    def _read(self, layer_id: str, name: str) -> str | None:
        try:
            return read_text(f"{self._dir(layer_id)}/{name}")
        except FileNotFoundError:
            if not self.exists(layer_id):
                raise LayerNotFound(layer_id) from None
            return None

    def parent(self, layer_id: str) -> str | None:
        return self._read(layer_id, "parent-id") or None

    def _link(self, layer_id: str) -> str:
        link = self._read(layer_id, "link")
        assert link is not None
        return link

    def _links(self, layer_id: str) -> list[str]:
        """The short names of the layer and all its parents, the layer first: one read of
        its `lower` file however deep the chain is."""
        lower = self._read(layer_id, "lower")
        parents = [p.removeprefix("l/") for p in lower.split(":")] if lower else []
        return [self._link(layer_id), *parents]

    def _committed(self, layer_id: str) -> bool:
        return os.path.exists(self._dir(layer_id) + "/committed")

    def is_readonly(self, layer_id: str) -> bool:
        return self._committed(layer_id)

    def _set_readonly(self, layer_id: str) -> None:
        _write_text(self._dir(layer_id) + "/committed", "")

    def _forget_readonly(self, layer_id: str) -> None:
        pass  # the marker goes with the layer's directory

    # ------------------------------------------------------------------ lifecycle

    def create(self, layer_id, parent=None, opts: CreateOpts | None = None):
        self._create(layer_id, parent, opts is not None and opts.volatile, readonly=True)

    def create_rw(self, layer_id, parent=None, opts: CreateOpts | None = None):
        self._create(layer_id, parent, opts is not None and opts.volatile, readonly=False)

    def _create(self, layer_id: str, parent: str | None, volatile: bool, readonly: bool) -> None:
        final = self._dir(layer_id)
        if os.path.exists(final):
            raise LayerExists(layer_id)
        if parent is not None and not self.exists(check_id(parent)):
            raise LayerNotFound(parent, " (the parent of the new layer)")
        partial = f"{self._layers_prefix}.partial-{layer_id}"
        if os.path.exists(partial):
            _native.remove_tree(partial)
        os.mkdir(partial, 0o700)
        os.mkdir(partial + "/diff", 0o755)
        os.mkdir(partial + "/merged", 0o700)
        if readonly:
            _write_text(partial + "/committed", "")
        link = self._new_link()
        if parent is not None:
            plink = read_text(self._dir(parent) + "/link")
            plower = self._read(parent, "lower")
            _write_text(partial + "/lower", f"l/{plink}" + (f":{plower}" if plower else ""))
            _write_text(partial + "/parent-id", parent)
            os.mkdir(partial + "/work", 0o700)
            if volatile:  # only a mount with an upper directory can be volatile
                _write_text(partial + "/volatile", "")
            committed = self._dir(parent) + "/committed"
            if not os.path.exists(committed):
                _write_text(committed, "")
        _write_text(partial + "/link", link)
        os.symlink(f"../layers/{layer_id}/diff", self._links_prefix + link)
        os.rename(partial, final)

    def _new_link(self) -> str:
        while True:
            # Uniform over the alphabet: bytes past its largest multiple are dropped.
            top = 256 - 256 % len(_LINK_ALPHABET)
            picks = [b for b in os.urandom(2 * LINK_LEN) if b < top][:LINK_LEN]
            if len(picks) < LINK_LEN:
                continue
            link = "".join(_LINK_ALPHABET[b % len(_LINK_ALPHABET)] for b in picks)
            if not os.path.lexists(self._links_prefix + link):
                return link

    def remove(self, layer_id: str) -> None:
        self._check_removable(layer_id)
        doomed = f"{self._layers_prefix}.removing-{layer_id}"
        for d in (self._dir(layer_id), f"{self._layers_prefix}.partial-{layer_id}"):
            if not os.path.exists(d):
                continue
            try:
                link: str | None = read_text(d + "/link")
            except FileNotFoundError:
                link = None
            _native.umount_tree(d, detach=True)
            os.rename(d, doomed)
            if link:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._links_prefix + link)
                self.flattener.drop(link)
            _native.remove_tree(doomed)
        if os.path.exists(doomed):
            _native.remove_tree(doomed)

    # ------------------------------------------------------------------ mounting

    def _volatile(self, layer_id: str) -> bool:
        return self.volatile or os.path.exists(self._dir(layer_id) + "/volatile")

    def _mount_options(self, volatile: bool) -> list[str]:
        return mount_options(self.userxattr, volatile)

    def _prepare_upper(self, layer_id: str, volatile: bool) -> None:
        """Before mounting the layer with its upper directory: clear the kernel's mark of an
        earlier volatile mount if that was during this boot (else refuse: the host went down
        since), whether this mount is volatile or not (overlay.volatile may have changed);
        before a volatile mount, record this boot."""
        layer = self._dir(layer_id)
        mark = layer + "/work/work/incompat/volatile"
        if not volatile and not os.path.isdir(mark):
            return  # the usual mount: one stat
        boot = boot_id()
        if os.path.isdir(mark):
            try:
                last = read_text(layer + "/volatile-boot")
            except FileNotFoundError:
                last = None
            if boot is None or last != boot:
                raise StorageError(
                    f"layer {layer_id} was mounted volatile when the host went down, so its "
                    "content may be incomplete; remove it")
            _native.remove_tree(mark)
        if volatile and boot is not None:
            _write_text(layer + "/volatile-boot", boot)

    def _plan(self, layer_id: str, writable: bool = False
              ) -> tuple[list[str], str | None, str | None]:
        """(lower directories uppermost first, upperdir, workdir) for mounting the layer:
        read-only (no upper) once committed, unless `writable` (apply_diff writing)."""
        links = self._visible(self._links(layer_id))
        if self._committed(layer_id) and not writable:
            lowers, upper, work = links, None, None
        else:
            lowers = links[1:]
            upper, work = self._diff(layer_id), self._dir(layer_id) + "/work"
        dirs = self._fit(lowers, self._max_lowers())
        # overlay needs a lower directory under an upper one, and two without one
        if len(dirs) < (1 if upper else 2):
            dirs.append(f"{self.home_dir}/empty")
        return dirs, upper, work

    def _visible(self, links: list[str]) -> list[str]:
        """The layers of a chain (short names, uppermost first) that show through: down to
        the first whose root is opaque. One getxattr per layer, on its l/<LINK> (the record
        every apply already wrote, so layers applied before this rule mount right too)."""
        for i, link in enumerate(links):
            if host.is_opaque(self._links_prefix + link, self.userxattr):
                return links[: i + 1]
        return links

    def _max_lowers(self) -> int:
        return self.mounter.lower_limit()

    def _fit(self, links: list[str], limit: int) -> list[str]:
        return self.flattener.fit(links, limit)

    def _mount_overlay(self, target: str, lowers: list[str], upper: str | None,
                       work: str | None, readonly: bool = False, volatile: bool = False) -> None:
        self.mounter.mount(target, lowers, upper, work, self._mount_options(volatile), readonly)

    def _mount(self, layer_id: str) -> str:
        readonly = self._mount_readonly(layer_id)
        if self.parent(layer_id) is None:
            if not readonly:
                return self._diff(layer_id)
            target = self._merged(layer_id)
            os.makedirs(target, 0o700, exist_ok=True)  # made by an earlier version: none
            _native.bind(self._diff(layer_id), target, readonly=True)
            return target
        target = self._merged(layer_id)
        lowers, upper, work = self._plan(layer_id, writable=not readonly)
        volatile = upper is not None and self._volatile(layer_id)
        if upper is not None:
            self._prepare_upper(layer_id, volatile)
        self._mount_overlay(target, lowers, upper, work, readonly=upper is None,
                            volatile=volatile)
        return target

    def _unmount(self, layer_id: str) -> None:
        if self.parent(layer_id) is None and not self._committed(layer_id):
            return  # a writable base layer is its diff directory: nothing was mounted
        target = self._merged(layer_id)
        if _native.is_mountpoint(target):
            # Lazily, as Docker does: a container that just exited still holds a copy of
            # this mount in its dying mount namespace, and a plain umount would wait for
            # that namespace to be torn down (tens of ms).
            _native.umount(target, _native.MNT_DETACH)

    def _is_mounted(self, layer_id: str) -> bool:
        if self.parent(layer_id) is None and not self._committed(layer_id):
            return True
        return _native.is_mountpoint(self._merged(layer_id))

    def mounts(self, layer_id: str) -> list[Mount]:
        if self.parent(layer_id) is None:
            rw = "ro" if self._committed(layer_id) else "rw"
            return [Mount("bind", self._diff(layer_id), ["rbind", rw])]
        lowers, upper, work = self._plan(layer_id)
        options = self._mount_options(upper is not None and self._volatile(layer_id))
        if upper is None:
            options.append("ro")
        else:
            options += [f"workdir={work}", f"upperdir={upper}"]
        options.append("lowerdir=" + ":".join(lowers))
        return [Mount("overlay", "overlay", options)]

    # ------------------------------------------------------------------ diffs (native)

    def own_dir(self, layer_id: str) -> str:
        return self._diff(layer_id)

    def _parent_dirs(self, layer_id: str) -> list[str]:
        return [self.flattener.link_dir(link)
                for link in self._visible(self._links(layer_id))[1:]]

    # ------------------------------------------------------------------ garbage

    def _layer_ids(self) -> list[str]:
        return sorted(n for n in os.listdir(self._layers_prefix) if not n.startswith("."))

    def collect(self, known: set[str]) -> list[str]:
        gone = super().collect(known) + self._collect_leftovers(self._layers_prefix, known)
        gone += self.flattener.collect()
        for link in os.listdir(self._links_prefix):  # short names of layers that are gone
            path = self._links_prefix + link
            if not os.path.exists(path):
                os.unlink(path)
                gone.append(path)
        return gone

    # ------------------------------------------------------------------ info

    def status(self) -> list[tuple[str, str]]:
        layers = [n for n in os.listdir(self._layers_prefix) if not n.startswith(".")]
        return [
            ("Backing Filesystem", backing_fs(self.home_dir)),
            ("Supports d_type", "true"),
            ("Native Overlay Diff", "true"),
            ("userxattr", str(self.userxattr).lower()),
            ("Mount API", "fsopen/fsconfig lowerdir+" if self.mounter.new_api() else "mount(2)"),
            ("Max lower layers per mount", str(self._max_lowers())),
            ("Layers", str(len(layers))),
            ("Flattened layers cached", str(self.flattener.count())),
        ]

    def metadata(self, layer_id: str) -> dict[str, str]:
        if not self.exists(layer_id):
            raise LayerNotFound(layer_id)
        meta = {"UpperDir": self._diff(layer_id)}
        if self.parent(layer_id) is not None:
            lowers, _, _ = self._plan(layer_id, writable=True)  # the layers under its upper
            meta["LowerDir"] = ":".join(os.path.realpath(p) for p in lowers)
            meta["WorkDir"] = self._dir(layer_id) + "/work"
            meta["MergedDir"] = self._merged(layer_id)
        return meta
