"""Type stub and contract of storagekit._native, the compiled core (csrc/).

The archive functions and the thin engine live in two further extension modules
(storagekit._archive, storagekit._fuse) that _native loads on first use of one of their names
(csrc/modules/native.cpp): callers always go through _native. The union engine is a program
of its own, storagekit-uniond (csrc/programs/uniond.cpp), with no Python binding.

Paths (and names, arguments, environment) are taken as os functions take them: str (a name
that is not UTF-8 as surrogate escapes, as os.fsdecode gives it), bytes or os.PathLike; paths
that come back are str, decoded like os.fsdecode. A NUL byte in one is a ValueError.

Every function releases the GIL around its I/O. A failed system call raises OSError (the
errno subclass: FileNotFoundError, PermissionError, ...) with ``filename`` (and ``filename2``
where two paths are involved). A failure with a meaning of its own that callers act on (a
thin device that already exists, a pool out of space, ...) raises EngineError, an OSError
whose ``kind`` names it, ``strerror`` says it in words and ``filename`` is the file involved
or None. A malformed or hostile archive raises ArchiveError. An argument the function
cannot accept (an unknown dialect, ...) raises ValueError. Messages show a byte that is not
UTF-8 (in a hostile archive's entry name, say) as \\xNN.

Whiteout dialects (the names used by every function below):
  "none"          a plain tree: no whiteouts are stored; on apply, whiteouts are carried out
                  (the named entries are deleted, opaque directories emptied of older entries)
  "oci"           the OCI / aufs on-disk format: empty file ``.wh.<name>``, ``.wh..wh..opq``
  "overlay"       overlayfs: char device 0/0 ``<name>``; ``trusted.overlay.opaque = "y"``
  "overlay-user"  overlayfs in a user namespace (``userxattr``): ``user.overlay.opaque = "y"``
"""

import os
from typing import TypeAlias, TypedDict

_Path: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]

class ArchiveError(ValueError): ...

class EngineError(OSError):
    kind: str  # what went wrong, by name: see each engine for its kinds

# ---------------------------------------------------------------------------- copy-up (csrc/copyup)

class CopyStats(TypedDict):
    files: int          # regular files (a hardlinked inode counts once)
    dirs: int
    symlinks: int
    specials: int       # fifos, sockets, char and block devices
    hardlinks: int      # extra names made with link() for inodes already copied
    bytes: int          # data bytes of regular files
    reflinked: int      # regular files whose data was shared with FICLONE

def copy_entry(src: _Path, dst: _Path, *, reflink: bool = True) -> str:
    """Copy one entry (regular file with its data, directory without its contents, symlink,
    fifo, socket, device) from src to dst, which must not exist. Keeps mode (incl. setuid),
    owner, nanosecond atime/mtime, every xattr (security.capability, system.posix_acl_*,
    trusted.*, user.*). Regular-file data goes by FICLONE (when reflink), else
    copy_file_range, else read/write; holes are kept (SEEK_DATA/SEEK_HOLE).
    Returns the data method used: "reflink", "copy_file_range", "readwrite" or "none"."""

def copy_tree(src: _Path, dst: _Path, *, reflink: bool = True, threads: int = 0) -> CopyStats:
    """Copy the tree rooted at directory src to dst (which must not exist), entry by entry as
    copy_entry does, keeping hardlinks inside the tree as hardlinks. Directory times are set
    after their contents. Does not cross into other mounts below src (skips their contents,
    copying the mount-point directory itself). threads: how many copy at once (0: one per
    CPU, at most 2)."""

# ------------------------------------------------------------------------- whiteouts (csrc/whiteout)

WH_PREFIX: str        # ".wh."
WH_META_PREFIX: str   # ".wh..wh."
WH_OPAQUE: str        # ".wh..wh..opq"

def whiteout_target(name: _Path) -> str | None:
    """".wh.foo" -> "foo"; None for a name that is not a whiteout or is bookkeeping
    (".wh..wh.*"). Raises ArchiveError for ".wh." alone, ".wh..", ".wh..." and names with "/"."""

def make_whiteout(dirpath: _Path, name: _Path, dialect: str) -> None:
    """Record in directory dirpath that `name` is deleted, in the dialect's format (replaces
    an existing entry `name`, or `.wh.name` for "oci")."""

def set_opaque(dirpath: _Path, dialect: str) -> None:
    """Mark directory dirpath opaque in the dialect's format."""

def is_whiteout(dirpath: _Path, name: _Path, dialect: str) -> bool:
    """Is entry `name` of dirpath a whiteout in this dialect ("oci": `name` starts with .wh.
    and is not bookkeeping; overlay: `name` is a char device 0/0)."""

def is_opaque(dirpath: _Path, dialect: str) -> bool: ...

def convert_whiteouts(root: _Path, src: str, dst: str) -> int:
    """Rewrite every whiteout and opaque marker under root from dialect src to dialect dst
    (both among "oci", "overlay", "overlay-user"). Returns how many were converted."""

def remove_tree(path: _Path) -> bool:
    """Remove path and everything below it, like `rm -rf` but never following a symlink
    (one named by path is removed itself). False if path did not exist. The parent
    directory must exist."""

# ---------------------------------------------------------------------------- changes (csrc/changes)

CHANGE_MODIFY: int  # 0, as Docker's archive.ChangeModify
CHANGE_ADD: int     # 1
CHANGE_DELETE: int  # 2

def changes(layer: _Path, parent: _Path | None) -> list[tuple[str, int]]:
    """Compare the full tree `layer` against the full tree `parent` (None: everything is
    added) the way Docker's archive.ChangesDirs does: an entry is modified when its type, mode,
    uid, gid, rdev, xattrs or (for non-directories) size or mtime differ, or when a directory
    contains a change (not for the root). Paths are absolute ("/a/b"), sorted; a deleted
    directory is one Delete, its contents are not listed."""

def tree_size(root: _Path) -> tuple[int, int]:
    """(bytes of regular-file data, number of inodes) under root, a hardlinked inode counted
    once; does not cross mounts."""

def paths_size(root: _Path, paths: list[_Path]) -> int:
    """Sum of st_size of the regular files among root/paths (absolute paths as in changes),
    each inode counted once; missing paths count 0."""

# ---------------------------------------------------------------------------- archive (csrc/archive)

class ApplyResult(TypedDict):
    size: int           # bytes of regular-file data written
    entries: int        # tar entries read (including whiteouts)
    diff_id: str        # "sha256:<hex>" of the whole uncompressed tar stream
    compression: str    # "none", "gzip", "zstd", "xz", "bzip2"

def apply_tar(fd: int, root: _Path, *, dialect: str = "none", same_owner: bool = True,
              lowers: list[_Path] | None = None, max_size: int = 0) -> ApplyResult:
    """Read a layer tar (compression detected) from file descriptor fd and apply it into
    directory root. Every path is resolved inside root (openat2 RESOLVE_IN_ROOT |
    RESOLVE_NO_MAGICLINKS): no "..", absolute path, symlink or hardlink can reach outside.
    Whiteouts in the stream are written in `dialect` (see above; "none" carries them out).
    An entry over an existing non-directory replaces it; a directory over a directory keeps
    the contents and takes the new metadata. same_owner=False leaves files owned by the caller.
    `lowers`: the parents' own directories (uppermost first, whiteouts in `dialect`) of a
    layer applied into its own directory; a hardlink to a file only they have copies the file
    up into root first, then links it.
    max_size (0: none) bounds the file sizes the entries declare, holes included.
    Raises ArchiveError (what and which entry) for a corrupt or hostile stream; what was
    applied before the bad entry stays (the caller removes the layer)."""

class ExportResult(TypedDict):
    bytes: int          # bytes written to fd (after compression)
    entries: int
    diff_id: str        # "sha256:<hex>" of the uncompressed tar stream

def export_tar(
    root: _Path,
    fd: int,
    *,
    dialect: str = "none",
    changes: list[tuple[_Path, int]] | None = None,
    compression: str = "none",
    parent: _Path | None = None,
) -> ExportResult:
    """Write directory root as an OCI layer tar (PAX, xattrs as SCHILY.xattr.*) to fd.
    `dialect` is how whiteouts are stored in root; they are written as OCI whiteouts, and
    bookkeeping (".wh..wh.*" except ".wh..wh..opq", "*.overlay.*" xattrs) is left out.
    With `changes`, only those paths are written (CHANGE_DELETE as ".wh.<name>" entries);
    `parent`, the tree they were found against, lets a modified directory that is empty on
    both sides and the same but for its mtime (removed and made again) go out opaque.
    The root directory itself is not an entry. Hardlinks inside the export stay hardlinks.
    compression: "none", "gzip" or "zstd"."""

# ------------------------------------------------------------------------------- mount (csrc/mount)

MS_RDONLY: int
MS_NOSUID: int
MS_NODEV: int
MS_NOEXEC: int
MS_REMOUNT: int
MS_BIND: int
MS_REC: int
MS_PRIVATE: int
MS_SLAVE: int
MS_SHARED: int
MS_MOVE: int
MS_NOATIME: int
MS_RELATIME: int
MS_UNBINDABLE: int
MNT_DETACH: int
MNT_FORCE: int
MNT_EXPIRE: int
UMOUNT_NOFOLLOW: int

class MountInfo(TypedDict):
    id: int
    parent_id: int
    major: int
    minor: int
    root: str           # path of the mount's root inside its filesystem
    target: str
    fstype: str
    source: str
    options: str        # vfs and fs options merged, as /proc/mounts shows them
    vfs_options: str
    fs_options: str

def mount(source: _Path, target: _Path, fstype: str | bytes | None, flags: int = 0,
          data: str | bytes | None = None) -> None: ...
def umount(target: _Path, flags: int = 0) -> None: ...
def bind(source: _Path, target: _Path, *, readonly: bool = False, recursive: bool = False) -> None: ...
def mount_table() -> list[MountInfo]:
    """The calling process's mount table, parsed by libmount from /proc/self/mountinfo."""
def find_mount(path: _Path) -> MountInfo:
    """The mount that contains path (the longest mount target that is a prefix of its
    real path)."""
def mounts_under(path: _Path) -> list[MountInfo]:
    """Mounts whose target is path or below it, deepest first (the order to unmount them)."""
def is_mountpoint(path: _Path) -> bool: ...
def umount_tree(path: _Path, *, detach: bool = False) -> int:
    """Unmount every mount at or under path, deepest first; returns how many."""
def fsmount_overlay(
    target: _Path,
    lowerdirs: list[_Path],
    upperdir: _Path | None = None,
    workdir: _Path | None = None,
    options: list[str | bytes] | None = None,
    readonly: bool = False,
) -> None:
    """Mount an overlay on target with fsopen/fsconfig("lowerdir+")/fsmount/move_mount (no
    one-page option limit; lowerdirs uppermost first). On failure the kernel's message is part
    of the OSError's filename: "<target>: overlay: <message>"."""
def has_new_mount_api() -> bool:
    """Can overlays be mounted through fsconfig "lowerdir+" (kernel 6.8+)?"""
def mount_in_dir(dir: _Path, source: _Path, target: _Path, fstype: str | bytes | None,
                 flags: int = 0, data: str | bytes | None = None) -> None:
    """mount(2) with relative paths in source and data resolved against dir; the calling
    process's working directory does not change (a vfork()ed child mounts)."""
def supports_d_type(dir: _Path) -> bool:
    """Does dir's filesystem report file types in directory entries? (creates a probe file)"""

# ------------------------------------------------------------------------ namespaces (csrc/namespaces)

def spawn_container(
    rootfs: _Path,
    argv: list[str | bytes],
    env: list[str | bytes],
    *,
    cwd: _Path = "/",
    uid: int = 0,
    gid: int = 0,
    groups: list[int] = [],
    hostname: str | bytes | None = None,
    user_namespace: bool = False,
    uid_map: tuple[int, int] | None = None,
    gid_map: tuple[int, int] | None = None,
    network: bool = False,
    readonly_rootfs: bool = False,
    stdin: int = 0,
    stdout: int = 1,
    stderr: int = 2,
) -> int:
    """Start argv as pid 1 of new mount, pid, uts, ipc and (unless network=True, which shares
    the host's) net namespaces, inside rootfs (an existing directory, usually a driver's mount;
    mounts under it come along); returns its pid once execve has succeeded. The caller reaps
    it with os.waitpid (its exit signal is SIGCHLD); nothing here waits for it.

    Inside: the mount tree is private; rootfs is bound onto itself and becomes / by pivot_root
    (the host's tree is detached). /proc is a new procfs; /dev a tmpfs (nosuid, noexec) with
    null, zero, full, random, urandom, tty (device nodes, or the host's nodes bound onto empty
    files where mknod is refused, as in a user namespace), /dev/pts (private devpts), /dev/ptmx,
    /dev/shm (tmpfs 1777) and the fd, stdin, stdout, stderr links; /sys read-only when the
    kernel allows it. Missing /proc, /dev, /sys directories are created in rootfs; one that is
    a symlink is refused (ENOTDIR). readonly_rootfs makes / read-only (mounts under it are not
    affected). A new net namespace has only lo, brought up. hostname None keeps a private copy
    of the host's name.

    Identity: setgroups(groups), setgid, setuid. With user_namespace, a user namespace, whose
    rootfs bind is nodev (a device node in the rootfs cannot be opened: the kernel makes nodev
    only what is mounted inside the namespace). With uid_map and gid_map (FIRST, COUNT), given
    together, it maps container ids 0..COUNT-1 onto host ids FIRST..FIRST+COUNT-1, setgroups
    allowed (writing such maps needs CAP_SETUID/CAP_SETGID: root); uid, gid and groups must be
    in the ranges (else EINVAL). A range that is empty, holds host id 0 or goes past
    4294967294 is a ValueError. Without them it maps container root 0 (only) to the caller's
    euid/egid with setgroups denied: uid and gid must be 0 (else EINVAL, "container: setuid
    1000") and groups empty (else EPERM). The calling
    process must be dumpable (a process that changed its uid is not: prctl(PR_SET_DUMPABLE)),
    or writing the id maps fails with PermissionError.

    The command is argv[0] searched in env's PATH inside the new root (default
    /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin); with a "/" it is used as is.
    env is the whole environment. cwd must exist and be reachable by uid. stdin, stdout and
    stderr are the caller's fds that become 0, 1, 2 (any permutation is fine); every other fd
    is closed. Signal dispositions and mask are reset, umask is the caller's.

    The container gets SIGKILL when the calling *thread* exits (PR_SET_PDEATHSIG): call this
    from a thread that outlives the container (the main thread, or one that waits for it).
    Being pid 1, the command only receives the signals it installed handlers for (SIGKILL and
    SIGSTOP always); forwarded SIGINT/SIGTERM are dropped by a command that ignores them.
    When pid 1 exits, the kernel kills the rest of the container.

    Errors before exec raise OSError(errno, strerror, "container: <step>") once the failed
    child has been reaped, e.g. FileNotFoundError "container: exec 'nosuchcmd'",
    "container: chdir /work", "container: mount /proc"; argv empty or a NUL byte in an
    argument, or the id (uid_t)-1 as uid, gid or a group, which the kernel reads as "no
    change": ValueError."""

def open_in_root(rootfd: int, path: _Path, flags: int) -> int:
    """openat2(rootfd, path, flags | O_CLOEXEC) with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS:
    path, its "..", and every symlink met on the way (absolute ones too) resolve as if rootfd
    were "/", so nothing outside the tree under rootfd is reached; /proc-style magic links are
    refused (ELOOP). Returns the new fd (O_PATH in flags gives a reference to stat or reopen
    without opening the file itself). A failure raises OSError with filename=path."""

# ---------------------------------------------------------------------- thin engine (csrc/thin)

class ThinPoolStatus(TypedDict):
    transaction_id: int
    used_metadata_blocks: int       # 4 KiB metadata blocks
    total_metadata_blocks: int
    used_data_blocks: int
    total_data_blocks: int
    held_metadata_root: int | None  # block of the reserved metadata snapshot
    mode: str                       # "rw" | "ro" | "out_of_data_space"
    discards: str                   # "ignore_discard" | "discard_passdown" | "no_discard_passdown"
    no_space: str                   # "error_if_no_space" | "queue_if_no_space"
    needs_check: bool
    metadata_low_watermark: int     # min(1024, total_metadata_blocks / 4), as the kernel
    data_block_size: int            # sectors
    low_water_mark: int             # data blocks (as given at create/open)
    low_water_mark_reached: bool    # free data blocks <= low_water_mark
    time: int                       # the pool's snapshot time counter
    devices: int
    commits: int                    # since this ThinPool was opened (format counts one)
    last_commit_blocks_written: int  # metadata blocks written by the last commit, superblock included
    metadata_blocks_written: int    # since opened (excluding superblocks)
    transaction_open: bool          # uncommitted changes exist
    line: str                       # the kernel's pool status line (see status_line)

class ThinDeviceStatus(TypedDict):
    id: int
    mapped_blocks: int
    mapped_sectors: int
    highest_mapped_sector: int | None
    transaction_id: int             # the pool's transaction id when the device was created
    creation_time: int
    snapshotted_time: int
    line: str                       # the kernel's thin status line: "<mapped sectors> <highest|->"

class ThinPool:
    """A thin pool with dm-thin's semantics, writing dm-thin's on-disk metadata format
    (thin_check, thin_dump, thin_ls, thin_delta and thin_rmap read it; metadata made by
    thin_restore or the kernel opens). Two files (or block devices; str, bytes or os.PathLike
    paths): metadata in 4 KiB blocks
    (at most 255 * 16320 blocks, ~16 GiB, are used) and data in data blocks.

    Thin devices are 24-bit ids (0..16777215) with no size: any byte offset can be read,
    written or discarded. A never-written block reads as zeros. The first write to a block
    allocates a data block (the rest of it is zeroed unless skip_block_zeroing); the first
    write to a block shared with a snapshot copies it (copy_file_range inside the data file:
    a reflink on xfs/btrfs) unless the write covers the whole block. Sharing is decided as the
    kernel does, by time: a block mapped before the device's latest snapshot is shared.
    discard unmaps the data blocks it covers entirely (a partial block is left alone) and frees
    those no other device or snapshot uses; at the next commit freed blocks are punched out
    of the data file (BLKDISCARD on a block device) unless ignore_discard or
    no_discard_passdown. ignore_discard makes discard a no-op.

    Durability: changes form a transaction that commit()/flush() make durable and atomic
    (new metadata blocks and the data device are synced, then the superblock is written and
    synced). The pool also commits by itself every commit_interval seconds (a background
    thread; 0 disables), when a transaction has allocated max_transaction_blocks metadata
    blocks (0: 1/8 of the metadata, 16..4096), before reserve_metadata_snap, and on close.
    A crash loses only uncommitted changes (written data of blocks mapped before the last
    commit may already be in place, as on any block device). Committing with nothing changed
    writes nothing.

    Out of space: a write needing a new data block when none is free commits (freeing blocks
    released in the open transaction) and retries; if still none, the mode becomes
    out_of_data_space until an allocation succeeds again (a discard, a delete, a bigger data
    file on the next open). With error_if_no_space the write fails at once; otherwise
    (queue_if_no_space, the default) it waits for space up to no_space_timeout seconds counted
    from when the pool ran out, as the kernel's no_space_timeout, and fails after that, as do
    later writes needing a block until space is found. The failure is EngineError "no_space"
    (ENOSPC) naming the data file. When the metadata device fills up, the open transaction is
    dropped (the pool goes back to the last commit), needs_check is set in the superblock and
    the pool becomes read-only (mode "ro"), as dm-thin does; the operation raises ENOSPC.

    Errors: EngineError, by kind (its errno in brackets): "bad_message" [EINVAL] (not a pool
    message: unknown verb, wrong arguments, an id over 24 bits), "bad_argument" [EINVAL]
    (set_transaction_id with the wrong current id, release_metadata_snap without a held
    snapshot, an offset and length that overflow, a data file that is neither a regular file
    nor a block device), "device_exists" [EEXIST], "no_device" [ENODATA], "no_origin"
    [ENODATA] (create_snap's origin), "no_space" [ENOSPC] (no free data block; the metadata
    space exhausted), "read_only" [EROFS] (a change to a read-only pool), "busy" [EBUSY] (a
    metadata snapshot is held already), "locked" [EBUSY] (the metadata file is open in another
    ThinPool, which holds an exclusive flock on it), "closed" [EBADF], "damaged" [EIO] (a
    metadata block fails its checks). A failed system call on one of the files is a plain
    OSError naming it. ValueError: bad data_block_size, read_only at create, files too small,
    or metadata that is not a usable dm-thin superblock (bad magic, checksum, version, ...).

    Thread-safe: one mutex per pool serialises all operations (devices of one pool may be
    served from several threads; different pools run in parallel). Every method releases the
    GIL. Also a context manager (close on exit)."""

    @staticmethod
    def create(
        metadata: _Path,
        data: _Path,
        *,
        data_block_size: int = 128,
        low_water_mark: int = 0,
        skip_block_zeroing: bool = False,
        ignore_discard: bool = False,
        no_discard_passdown: bool = False,
        error_if_no_space: bool = False,
        read_only: bool = False,
        metadata_size: int | None = None,
        data_size: int | None = None,
        commit_interval: float = 1.0,
        max_transaction_blocks: int = 0,
        cache_blocks: int = 4096,
        no_space_timeout: float = 60.0,
    ) -> ThinPool:
        """Format a new pool (an existing pool on these files is lost). data_block_size in
        512-byte sectors: a multiple of 128 from 128 (64 KiB) to 2097152 (1 GiB), fixed for
        the pool's life. metadata_size/data_size (bytes) create or resize regular files first;
        otherwise the files must exist, and their sizes give the number of metadata blocks
        (at least 64) and data blocks. read_only=True is refused (ValueError), as by the
        kernel at creation. cache_blocks bounds the metadata block cache (4 KiB each)."""

    @staticmethod
    def open(
        metadata: _Path,
        data: _Path,
        *,
        low_water_mark: int = 0,
        skip_block_zeroing: bool = False,
        ignore_discard: bool = False,
        no_discard_passdown: bool = False,
        error_if_no_space: bool = False,
        read_only: bool = False,
        commit_interval: float = 1.0,
        max_transaction_blocks: int = 0,
        cache_blocks: int = 4096,
        no_space_timeout: float = 60.0,
    ) -> ThinPool:
        """Open an existing pool. The features are not stored in the metadata (as with the
        kernel's table line): give them again. A data file larger than the pool extends the
        pool (committed at once); a smaller one is refused (ValueError). Metadata with the
        needs_check flag opens read-only (mode "ro") until `thin_check
        --clear-needs-check-flag` clears it. read_only opens both files read-only."""

    def message(self, message: str) -> None:
        """A dm-thin pool message: "create_thin <id>", "create_snap <id> <origin id>" (the
        origin may be in use: the snapshot is atomic with respect to concurrent writes),
        "delete <id>", "set_transaction_id <current> <new>" (64-bit compare-and-swap),
        "reserve_metadata_snap" (commits, then keeps a read-only copy of the metadata for
        `thin_dump -m`), "release_metadata_snap". Numbers are plain decimals."""

    def status(self) -> ThinPoolStatus: ...
    def status_line(self) -> str:
        """The kernel's pool status: "<transaction id> <used>/<total metadata blocks>
        <used>/<total data blocks> <held metadata root|-> rw|ro|out_of_data_space
        ignore_discard|discard_passdown|no_discard_passdown error_if_no_space|queue_if_no_space
        needs_check|- <metadata low watermark>"."""
    def device_status(self, dev: int) -> ThinDeviceStatus: ...
    def devices(self) -> list[int]:
        """Ids of all thin devices, ascending."""
    def mappings(self, dev: int) -> list[tuple[int, int, int]]:
        """(virtual block, data block, time) of every mapped block of dev, ascending."""
    def read(self, dev: int, offset: int, length: int) -> bytes: ...
    def write(self, dev: int, offset: int, data: bytes | bytearray | memoryview) -> None: ...
    def discard(self, dev: int, offset: int, length: int) -> None: ...
    def commit(self) -> None: ...
    def flush(self) -> None:
        """The same as commit(): what a FLUSH/FUA does to a dm-thin device."""
    def close(self) -> None:
        """Commit (unless read-only), stop the committer thread, release the files and the
        lock. Idempotent; afterwards every other method raises EngineError "closed" (EBADF)."""
    @property
    def closed(self) -> bool: ...
    @property
    def block_size(self) -> int:
        """Data block size in bytes."""
    def __enter__(self) -> ThinPool: ...
    def __exit__(self, *exc: object) -> bool: ...

class ThinFuse:
    """A pool's thin devices served as regular files over FUSE, on threads of its own (libfuse's
    multithreaded loop; reads, writes, fsync and fallocate go from its workers straight to the
    pool, never through Python). Mounts `mountpoint` (an existing directory) at once; OSError
    when the mount fails (EngineError "mount_failed", EIO, with libfuse's reason when libfuse
    cannot mount). The files are "<id>" in the mount's root, mode 0600, of the size given
    to add(); st_blocks counts the device's mapped data; statfs reports the data block size as
    f_bsize (a loop device over a file takes its discard granularity from it) and the pool's
    free data blocks. Every open is direct I/O (no page cache between a loop device and the
    pool). Writes past the end fail with EFBIG, a size change with EPERM. flush (every close)
    and fsync commit the pool. fallocate: PUNCH_HOLE|KEEP_SIZE and ZERO_RANGE discard the whole
    data blocks inside the range and overwrite the partial ones at its ends with zeros where
    they hold data (a pool with ignore_discard refuses PUNCH_HOLE with EOPNOTSUPP and zeroes
    ZERO_RANGE by writing); mode 0 within the file is a no-op; anything else EOPNOTSUPP.
    The worker threads have PR_SET_IO_FLUSHER set (they sit under the block layer). The pool
    is kept alive as long as this object."""

    def __init__(self, pool: ThinPool, mountpoint: _Path, *, max_threads: int = 8,
                 fsname: str = "storagekit-thin") -> None: ...
    def add(self, dev: int, size: int) -> None:
        """Show device dev as a file of size bytes (EngineError "shown", EEXIST, when it is
        shown already). The pool is not asked: I/O to a device it does not have fails with
        ENODATA."""
    def remove(self, dev: int, timeout: float = 5.0) -> bool:
        """Hide the file: lookups fail at once. Waits up to timeout seconds for its open handles
        to be released (a detached loop device releases its file asynchronously) and returns
        whether they were; handles still open keep working until closed. EngineError
        "not_shown" (ENOENT) when not shown."""
    def files(self) -> dict[int, int]:
        """{id: size} of the shown files."""
    def opens(self, dev: int) -> int: ...
    def stop(self, grace: float = 2.0) -> bool:
        """Unmount (lazily) and end the connection; files still open fail with ENOTCONN from
        then on, and stop returns False when there were any. Workers still busy after grace
        seconds are cut off (fusectl abort). Idempotent; also on __exit__ and destruction."""
    @property
    def mountpoint(self) -> str: ...
    @property
    def device(self) -> int:
        """st_dev of the mount (its fusectl connection is named after it)."""
    @property
    def running(self) -> bool: ...
    def __enter__(self) -> ThinFuse: ...
    def __exit__(self, *exc: object) -> bool: ...
