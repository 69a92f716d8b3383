"""The overlay driver: layers stacked by the kernel's overlayfs.

Layout under the driver home (in the spirit of Docker's overlay2)::

    layers/<id>/diff/        the layer's own files: its upper directory; whiteouts in
                             overlay's format (char device 0/0, trusted.overlay.opaque)
    layers/<id>/link         the layer's short name LINK (26 characters)
    layers/<id>/lower        "l/<parent LINK>:l/<grandparent LINK>:..." uppermost first;
                             absent for a base layer
    layers/<id>/work/        overlay's work directory (layers with a parent)
    layers/<id>/merged/      where get() mounts the layer
    layers/<id>/committed    present once a child was created on the layer: from then on
                             it is mounted read-only (only lower directories), as its
                             children's content depends on it
    layers/<id>/volatile     the layer was created volatile (CreateOpts): it is mounted
                             with overlay's volatile option
    layers/<id>/volatile-boot  the boot id of the host when the layer was last mounted
                             volatile
    l/<LINK>                 symlink to ../layers/<id>/diff (short paths for mount(2))
    flat/<LINK>/             cache: the merged content of the layer named LINK and all its
                             parents as one plain tree (see "More than 500 layers")
    layers/.partial-<id>     a layer being created (renamed when complete)

Mounting. A base layer is not mounted: get() returns its diff directory. Any other layer is
an overlay mount of its parents' diff directories (lowerdir, uppermost first) with its own diff
as upperdir, or — once committed — its own diff as the top lower directory and no upper.
Lower directories are named by their l/<LINK> symlinks, so mounting reads one `lower` file
however deep the chain is.
Mounts go through the new mount API (fsopen("overlay"), one fsconfig "lowerdir+" per layer,
fsmount, move_mount), which has no one-page limit on the option string, so a stack is limited
only by the kernel's 500 lower layers; where the new API is missing the driver falls back to
mount(2) with the short l/<LINK> paths relative to the home directory (about 130 layers fit in
the page). Options: index=off (a reused upper directory must not fail with EBUSY), userxattr
in a user namespace, redirect_dir=off and metacopy=off where the kernel defaults them on (both
would put things in the upper directory that a tar cannot carry), volatile for layers created
volatile (a --rm container's) or for all with overlay.volatile.

Volatile mounts. overlay then never syncs the upper directory: neither on fsync nor, which is
what matters for a short container, when the mount goes, where it would otherwise sync the
whole backing filesystem. The kernel marks such a work directory (work/work/incompat/
volatile) and refuses to mount it again, since after a crash its upper directory may be
incomplete. The driver clears the mark when the layer was last mounted during this boot of
the host (nothing was lost), and otherwise refuses to mount the layer.

More than 500 layers. When a mount would need more lower directories than the kernel allows
(500, or what fits one page with mount(2)), the bottom of the chain is replaced by one
flattened, read-only directory: flat/<LINK of A> holds the merged content of layer A and all its
parents, built once by copying an overlay mount of that chain (with reflink where the
filesystem shares extents) and reused by every layer above A. A is chosen at a depth that is
a multiple of 100, so that sibling branches share the same flattened layers; flattening
recurses when A's own chain is too long. A flattened directory stays valid because a layer
with children is committed and never written again; it is deleted with its layer.

Diffs. Between a layer and its direct parent, diff, apply and size are native: the diff
directory is exported or filled directly, converting between overlay's whiteouts and OCI's.
For any other parent the naive diff (mount and compare) is used. changes() is always naive.
"""

from __future__ import annotations

import contextlib
import os

from storagekit import _native
from storagekit.driver import CreateOpts, Driver, Mount, boot_id, check_id
from storagekit.errors import InvalidArgument, LayerExists, LayerNotFound, StorageError
from storagekit.hostinfo import backing_fs

OVL_MAX_STACK = 500  # the kernel's limit of lower directories (fs/overlayfs/params.h)
FLATTEN_STEP = 100   # flattened layers sit at depths that are multiples of this
LINK_LEN = 26
_LINK_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
PAGE = os.sysconf("SC_PAGE_SIZE")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool_option(options: dict[str, str], key: str, default: bool) -> bool:
    value = options.get(key)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise InvalidArgument(f"{key} must be true or false, not {value!r}")


def _read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _module_param(name: str) -> str | None:
    try:
        with open(f"/sys/module/overlay/parameters/{name}") as f:
            return f.read().strip()
    except OSError:
        return None


def in_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


def _has_overlay() -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == "overlay" for line in f if line.strip())
    except OSError:
        return False


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
        self.volatile = _bool_option(self.options, "overlay.volatile", False)
        try:
            self.max_lowers = int(self.options.get("overlay.max_lowers", OVL_MAX_STACK))
        except ValueError:
            raise InvalidArgument("overlay.max_lowers must be a number") from None
        if not 2 <= self.max_lowers <= OVL_MAX_STACK:
            raise InvalidArgument(f"overlay.max_lowers must be between 2 and {OVL_MAX_STACK}")
        self.userxattr = in_user_namespace()
        self.dialect = "overlay-user" if self.userxattr else "overlay"  # type: ignore[misc]
        # Paths are str, joined by concatenation: they are hot here, and pathlib is not
        # imported on a container's boot path (see Driver.home).
        self._layers_prefix = f"{self.home_dir}/layers/"
        self._links_prefix = f"{self.home_dir}/l/"
        self._flat_prefix = f"{self.home_dir}/flat/"
        for sub in ("layers", "l", "flat"):
            with contextlib.suppress(FileExistsError):
                os.mkdir(f"{self.home_dir}/{sub}", 0o700)
        self._new_api_works: bool | None = None if self.mount_api == "auto" else (
            self.mount_api == "new")

    # ------------------------------------------------------------------ host support

    @classmethod
    def probe(cls, root):
        if not _has_overlay():
            return False, "the kernel has no overlay filesystem (modprobe overlay)"
        root = os.path.abspath(root)
        probe_base = root
        while not os.path.exists(probe_base):
            probe_base = os.path.dirname(probe_base)
        fstype = backing_fs(probe_base)
        if fstype in ("overlay", "aufs"):
            return False, f"{root} is on {fstype}, which overlay cannot use as a layer"
        if not _native.supports_d_type(probe_base):
            hint = " (xfs: mkfs.xfs -n ftype=1)" if fstype == "xfs" else ""
            return False, (f"the backing filesystem {fstype} of {root} does not report file "
                           f"types (d_type){hint}")
        return True, f"kernel overlayfs on {fstype}"

    # ------------------------------------------------------------------ paths and records

    def _dir(self, layer_id: str) -> str:
        return self._layers_prefix + check_id(layer_id)

    def _diff(self, layer_id: str) -> str:
        return self._dir(layer_id) + "/diff"

    def _merged(self, layer_id: str) -> str:
        return self._dir(layer_id) + "/merged"

    def path(self, layer_id: str) -> str:
        if self.parent(layer_id) is None:
            return self._diff(layer_id)
        return self._merged(layer_id)

    def exists(self, layer_id: str) -> bool:
        return os.path.isfile(self._dir(layer_id) + "/link")

    def _read(self, layer_id: str, name: str) -> str | None:
        try:
            return _read_text(f"{self._dir(layer_id)}/{name}")
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

    def _link_dir(self, link: str) -> str:
        """The lower directory of a layer by its short name: the l/<LINK> symlink, which the
        kernel follows when it resolves a layer path."""
        return self._links_prefix + link

    def _committed(self, layer_id: str) -> bool:
        return os.path.exists(self._dir(layer_id) + "/committed")

    # ------------------------------------------------------------------ lifecycle

    def create(self, layer_id, parent=None, opts: CreateOpts | None = None):
        self._create(layer_id, parent, opts is not None and opts.volatile)

    def create_rw(self, layer_id, parent=None, opts: CreateOpts | None = None):
        self._create(layer_id, parent, opts is not None and opts.volatile)

    def _create(self, layer_id: str, parent: str | None, volatile: bool) -> None:
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
        link = self._new_link()
        if parent is not None:
            plink = _read_text(self._dir(parent) + "/link")
            plower = self._read(parent, "lower")
            _write_text(partial + "/lower", f"l/{plink}" + (f":{plower}" if plower else ""))
            _write_text(partial + "/parent-id", parent)
            os.mkdir(partial + "/work", 0o700)
            os.mkdir(partial + "/merged", 0o700)
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
                link: str | None = _read_text(d + "/link")
            except FileNotFoundError:
                link = None
            _native.umount_tree(d, detach=True)
            os.rename(d, doomed)
            if link:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._links_prefix + link)
                self._drop_flat(link)
            _native.remove_tree(doomed)
        if os.path.exists(doomed):
            _native.remove_tree(doomed)

    # ------------------------------------------------------------------ mounting

    def _volatile(self, layer_id: str) -> bool:
        return self.volatile or os.path.exists(self._dir(layer_id) + "/volatile")

    def _mount_options(self, volatile: bool) -> list[str]:
        opts = []
        if _module_param("index") is not None:
            opts.append("index=off")
        if self.userxattr:
            opts.append("userxattr")
        if _module_param("redirect_dir") == "Y":
            opts.append("redirect_dir=off")
        if _module_param("metacopy") == "Y":
            opts.append("metacopy=off")
        if volatile:
            opts.append("volatile")
        return opts

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
                last = _read_text(layer + "/volatile-boot")
            except FileNotFoundError:
                last = None
            if boot is None or last != boot:
                raise StorageError(
                    f"layer {layer_id} was mounted volatile when the host went down, so its "
                    "content may be incomplete; remove it")
            _native.remove_tree(mark)
        if volatile and boot is not None:
            _write_text(layer + "/volatile-boot", boot)

    def _plan(self, layer_id: str) -> tuple[list[str], str | None, str | None]:
        """(lower directories uppermost first, upperdir, workdir) for mounting the layer."""
        links = self._links(layer_id)
        if self._committed(layer_id):
            lowers, upper, work = links, None, None
        else:
            lowers = links[1:]
            upper, work = self._diff(layer_id), self._dir(layer_id) + "/work"
        return self._fit(lowers, self._max_lowers()), upper, work

    def _max_lowers(self) -> int:
        if self._use_new_api():
            return self.max_lowers
        # mount(2): "lowerdir=l/<26>:l/<26>..." plus absolute upper/work paths in one page.
        fixed = len(",upperdir=,workdir=,") + 2 * (len(self.home_dir) + 100) + 64
        return max(2, min(self.max_lowers, (PAGE - 1 - fixed) // (LINK_LEN + 3)))

    def _fit(self, links: list[str], limit: int) -> list[str]:
        """Lower directories for these layers (short names, uppermost first), flattening the
        bottom of the chain into one cached directory when there are more than `limit`."""
        if len(links) <= limit:
            return [self._link_dir(link) for link in links]
        depth_top = len(links)  # depth of the uppermost layer, the base being depth 1
        cut = -(-(depth_top - (limit - 1)) // FLATTEN_STEP) * FLATTEN_STEP  # rounded up
        cut = min(cut, depth_top - 1)
        keep = depth_top - cut  # layers above the flattened one
        flat = self._flat(links[keep:], limit)
        return [self._link_dir(link) for link in links[:keep]] + [flat]

    def _flat(self, links: list[str], limit: int) -> str:
        """flat/<LINK>: the merged content of the layers `links` (a layer and all its parents,
        uppermost first) as one plain tree, built when missing."""
        flat = self._flat_prefix + links[0]
        if os.path.isdir(flat):
            return flat
        import tempfile  # only for deep stacks: not imported on every CLI call

        lowers = self._fit(links, limit)
        tmp_mount = tempfile.mkdtemp(prefix=".flatten-", dir=self._flat_prefix)
        partial = f"{self._flat_prefix}.partial-{links[0]}"
        if os.path.exists(partial):
            _native.remove_tree(partial)
        try:
            self._mount_overlay(tmp_mount, lowers, None, None, readonly=True)
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

    def _drop_flat(self, link: str) -> None:
        for d in (self._flat_prefix + link, f"{self._flat_prefix}.partial-{link}"):
            if os.path.exists(d):
                _native.remove_tree(d)

    def _use_new_api(self) -> bool:
        if self._new_api_works is None:
            self._new_api_works = _native.has_new_mount_api()
        return self._new_api_works

    def _mount_overlay(self, target: str, lowers: list[str], upper: str | None,
                       work: str | None, readonly: bool = False, volatile: bool = False) -> None:
        options = self._mount_options(volatile)
        if self._use_new_api():
            _native.fsmount_overlay(target, lowers, upper, work, options, readonly)
            return
        # mount(2) takes one page of options: use l/<LINK> paths relative to the home.
        home = self.home_dir + "/"
        short = [self._short(p) for p in lowers]
        parts = [*options, "lowerdir=" + ":".join(short)]
        if upper:
            parts += [f"upperdir={upper.removeprefix(home)}", f"workdir={work.removeprefix(home)}"]
        data = ",".join(parts)
        if len(data) >= PAGE:
            raise StorageError(
                f"overlay mount options for {target} are {len(data)} bytes, over one page; "
                "the legacy mount(2) path cannot mount this stack"
            )
        flags = _native.MS_RDONLY if readonly else 0
        _native.mount_in_dir(self.home_dir, "overlay", target, "overlay", flags, data)

    def _short(self, path: str) -> str:
        return os.path.relpath(path, self.home_dir)

    def _mount(self, layer_id: str) -> str:
        if self.parent(layer_id) is None:
            return self._diff(layer_id)
        target = self._merged(layer_id)
        lowers, upper, work = self._plan(layer_id)
        volatile = upper is not None and self._volatile(layer_id)
        if upper is not None:
            self._prepare_upper(layer_id, volatile)
        self._mount_overlay(target, lowers, upper, work, readonly=upper is None,
                            volatile=volatile)
        return target

    def _unmount(self, layer_id: str) -> None:
        if self.parent(layer_id) is None:
            return
        target = self._merged(layer_id)
        if _native.is_mountpoint(target):
            # Lazily, as Docker does: a container that just exited still holds a copy of
            # this mount in its dying mount namespace, and a plain umount would wait for
            # that namespace to be torn down (tens of ms).
            _native.umount(target, _native.MNT_DETACH)

    def _is_mounted(self, layer_id: str) -> bool:
        if self.parent(layer_id) is None:
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

    def _native_diff(self, layer_id: str, parent: str | None) -> bool:
        return self.parent(layer_id) == parent

    def export_diff(self, layer_id, parent, fd, compression="none"):
        if not self._native_diff(layer_id, parent):
            return super().export_diff(layer_id, parent, fd, compression)
        return _native.export_tar(self._diff(layer_id), fd, dialect=self.dialect,
                                  compression=compression)

    def apply_diff(self, layer_id, parent, stream):
        self._check_exists(layer_id, None)
        if not self._native_diff(layer_id, parent):
            return super().apply_diff(layer_id, parent, stream)
        return self._apply_into(self._diff(layer_id), stream, self.dialect)

    def diff_size(self, layer_id, parent=None):
        self._check_exists(layer_id, parent)
        if not self._native_diff(layer_id, parent):
            return super().diff_size(layer_id, parent)
        return _native.tree_size(self._diff(layer_id))[0]

    # ------------------------------------------------------------------ info

    def status(self) -> list[tuple[str, str]]:
        layers = [n for n in os.listdir(self._layers_prefix) if not n.startswith(".")]
        flats = [n for n in os.listdir(self._flat_prefix) if not n.startswith(".")]
        return [
            ("Backing Filesystem", backing_fs(self.home_dir)),
            ("Supports d_type", "true"),
            ("Native Overlay Diff", "true"),
            ("userxattr", str(self.userxattr).lower()),
            ("Mount API", "fsopen/fsconfig lowerdir+" if self._use_new_api() else "mount(2)"),
            ("Max lower layers per mount", str(self._max_lowers())),
            ("Layers", str(len(layers))),
            ("Flattened layers cached", str(len(flats))),
        ]

    def metadata(self, layer_id: str) -> dict[str, str]:
        if not self.exists(layer_id):
            raise LayerNotFound(layer_id)
        meta = {"UpperDir": self._diff(layer_id)}
        parents = self._links(layer_id)[1:]
        if parents:
            lowers = self._fit(parents, self._max_lowers())
            meta["LowerDir"] = ":".join(os.path.realpath(p) for p in lowers)
            meta["WorkDir"] = self._dir(layer_id) + "/work"
            meta["MergedDir"] = self._merged(layer_id)
        return meta
