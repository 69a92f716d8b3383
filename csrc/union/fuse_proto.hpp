// The FUSE kernel protocol as the union engine speaks it on /dev/fuse.
//
// Our own definitions rather than <linux/fuse.h>: the installed header (protocol 7.38) predates
// passthrough, which protocol 7.40 added: the FUSE_PASSTHROUGH init flag (in flags2), the
// max_stack_depth field of the init reply, backing_id in the open reply, FOPEN_PASSTHROUGH and
// the FUSE_DEV_IOC_BACKING_OPEN/CLOSE ioctls. Layouts and numbers follow the kernel's
// include/uapi/linux/fuse.h; only what the engine uses is here.
#pragma once

#include <linux/ioctl.h>

#include <cstdint>

namespace sk::fuse {

inline constexpr uint32_t kMajor = 7;
// 7.40 is the first minor with passthrough; newer kernels talk 7.40 with us.
inline constexpr uint32_t kMinor = 40;
inline constexpr uint64_t kRootId = 1;

enum Opcode : uint32_t {
    LOOKUP = 1,
    FORGET = 2,
    GETATTR = 3,
    SETATTR = 4,
    READLINK = 5,
    SYMLINK = 6,
    MKNOD = 8,
    MKDIR = 9,
    UNLINK = 10,
    RMDIR = 11,
    RENAME = 12,
    LINK = 13,
    OPEN = 14,
    READ = 15,
    WRITE = 16,
    STATFS = 17,
    RELEASE = 18,
    FSYNC = 20,
    SETXATTR = 21,
    GETXATTR = 22,
    LISTXATTR = 23,
    REMOVEXATTR = 24,
    FLUSH = 25,
    INIT = 26,
    OPENDIR = 27,
    READDIR = 28,
    RELEASEDIR = 29,
    FSYNCDIR = 30,
    ACCESS = 34,
    CREATE = 35,
    INTERRUPT = 36,
    IOCTL = 39,
    DESTROY = 38,
    BATCH_FORGET = 42,
    READDIRPLUS = 44,
    FALLOCATE = 43,
    RENAME2 = 45,
    LSEEK = 46,
    COPY_FILE_RANGE = 47,
    SYNCFS = 50,
};

enum NotifyCode : int32_t { NOTIFY_INVAL_INODE = 2 };

// fuse_init_in/out flags. Bits 32..63 travel in flags2.
inline constexpr uint64_t ASYNC_READ = 1ull << 0;
inline constexpr uint64_t ATOMIC_O_TRUNC = 1ull << 3;
inline constexpr uint64_t BIG_WRITES = 1ull << 5;
inline constexpr uint64_t DONT_MASK = 1ull << 6;
inline constexpr uint64_t AUTO_INVAL_DATA = 1ull << 12;
inline constexpr uint64_t DO_READDIRPLUS = 1ull << 13;
inline constexpr uint64_t READDIRPLUS_AUTO = 1ull << 14;
inline constexpr uint64_t ASYNC_DIO = 1ull << 15;
inline constexpr uint64_t PARALLEL_DIROPS = 1ull << 18;
inline constexpr uint64_t POSIX_ACL = 1ull << 20;
inline constexpr uint64_t MAX_PAGES = 1ull << 22;
inline constexpr uint64_t CACHE_SYMLINKS = 1ull << 23;
inline constexpr uint64_t INIT_EXT = 1ull << 30;
inline constexpr uint64_t PASSTHROUGH = 1ull << 37;

// fuse_open_out.open_flags
inline constexpr uint32_t FOPEN_KEEP_CACHE = 1u << 1;
inline constexpr uint32_t FOPEN_NOFLUSH = 1u << 5;
inline constexpr uint32_t FOPEN_PASSTHROUGH = 1u << 7;

// fuse_setattr_in.valid
inline constexpr uint32_t FATTR_MODE = 1u << 0;
inline constexpr uint32_t FATTR_UID = 1u << 1;
inline constexpr uint32_t FATTR_GID = 1u << 2;
inline constexpr uint32_t FATTR_SIZE = 1u << 3;
inline constexpr uint32_t FATTR_ATIME = 1u << 4;
inline constexpr uint32_t FATTR_MTIME = 1u << 5;
inline constexpr uint32_t FATTR_FH = 1u << 6;
inline constexpr uint32_t FATTR_ATIME_NOW = 1u << 7;
inline constexpr uint32_t FATTR_MTIME_NOW = 1u << 8;

inline constexpr uint32_t GETATTR_FH = 1u << 0;
inline constexpr uint32_t FSYNC_FDATASYNC = 1u << 0;

struct InHeader {
    uint32_t len;
    uint32_t opcode;
    uint64_t unique;
    uint64_t nodeid;
    uint32_t uid;
    uint32_t gid;
    uint32_t pid;
    uint16_t total_extlen;
    uint16_t padding;
};

struct OutHeader {
    uint32_t len;
    int32_t error;
    uint64_t unique;
};

struct Attr {
    uint64_t ino;
    uint64_t size;
    uint64_t blocks;
    uint64_t atime;
    uint64_t mtime;
    uint64_t ctime;
    uint32_t atimensec;
    uint32_t mtimensec;
    uint32_t ctimensec;
    uint32_t mode;
    uint32_t nlink;
    uint32_t uid;
    uint32_t gid;
    uint32_t rdev;
    uint32_t blksize;
    uint32_t flags;
};

struct EntryOut {
    uint64_t nodeid;
    uint64_t generation;
    uint64_t entry_valid;
    uint64_t attr_valid;
    uint32_t entry_valid_nsec;
    uint32_t attr_valid_nsec;
    Attr attr;
};

struct ForgetIn {
    uint64_t nlookup;
};
struct ForgetOne {
    uint64_t nodeid;
    uint64_t nlookup;
};
struct BatchForgetIn {
    uint32_t count;
    uint32_t dummy;
};

struct GetattrIn {
    uint32_t getattr_flags;
    uint32_t dummy;
    uint64_t fh;
};

struct AttrOut {
    uint64_t attr_valid;
    uint32_t attr_valid_nsec;
    uint32_t dummy;
    Attr attr;
};

struct MknodIn {
    uint32_t mode;
    uint32_t rdev;
    uint32_t umask;
    uint32_t padding;
};

struct MkdirIn {
    uint32_t mode;
    uint32_t umask;
};

struct RenameIn {
    uint64_t newdir;
};

struct Rename2In {
    uint64_t newdir;
    uint32_t flags;
    uint32_t padding;
};

struct LinkIn {
    uint64_t oldnodeid;
};

struct SetattrIn {
    uint32_t valid;
    uint32_t padding;
    uint64_t fh;
    uint64_t size;
    uint64_t lock_owner;
    uint64_t atime;
    uint64_t mtime;
    uint64_t ctime;
    uint32_t atimensec;
    uint32_t mtimensec;
    uint32_t ctimensec;
    uint32_t mode;
    uint32_t unused4;
    uint32_t uid;
    uint32_t gid;
    uint32_t unused5;
};

struct OpenIn {
    uint32_t flags;
    uint32_t open_flags;
};

struct CreateIn {
    uint32_t flags;
    uint32_t mode;
    uint32_t umask;
    uint32_t open_flags;
};

struct OpenOut {
    uint64_t fh;
    uint32_t open_flags;
    int32_t backing_id;  // 7.40: with FOPEN_PASSTHROUGH
};

struct ReleaseIn {
    uint64_t fh;
    uint32_t flags;
    uint32_t release_flags;
    uint64_t lock_owner;
};

struct ReadIn {
    uint64_t fh;
    uint64_t offset;
    uint32_t size;
    uint32_t read_flags;
    uint64_t lock_owner;
    uint32_t flags;
    uint32_t padding;
};

struct WriteIn {
    uint64_t fh;
    uint64_t offset;
    uint32_t size;
    uint32_t write_flags;
    uint64_t lock_owner;
    uint32_t flags;
    uint32_t padding;
};

struct WriteOut {
    uint32_t size;
    uint32_t padding;
};

struct Kstatfs {
    uint64_t blocks;
    uint64_t bfree;
    uint64_t bavail;
    uint64_t files;
    uint64_t ffree;
    uint32_t bsize;
    uint32_t namelen;
    uint32_t frsize;
    uint32_t padding;
    uint32_t spare[6];
};

struct FsyncIn {
    uint64_t fh;
    uint32_t fsync_flags;
    uint32_t padding;
};

// The short (pre-7.33) form: the engine does not ask for FUSE_SETXATTR_EXT.
struct SetxattrIn {
    uint32_t size;
    uint32_t flags;
};

struct GetxattrIn {
    uint32_t size;
    uint32_t padding;
};

struct GetxattrOut {
    uint32_t size;
    uint32_t padding;
};

struct InitIn {
    uint32_t major;
    uint32_t minor;
    uint32_t max_readahead;
    uint32_t flags;
    uint32_t flags2;
    uint32_t unused[11];
};

struct InitOut {
    uint32_t major;
    uint32_t minor;
    uint32_t max_readahead;
    uint32_t flags;
    uint16_t max_background;
    uint16_t congestion_threshold;
    uint32_t max_write;
    uint32_t time_gran;
    uint16_t max_pages;
    uint16_t map_alignment;
    uint32_t flags2;
    uint32_t max_stack_depth;  // 7.40
    uint32_t unused[6];
};

struct FallocateIn {
    uint64_t fh;
    uint64_t offset;
    uint64_t length;
    uint32_t mode;
    uint32_t padding;
};

struct LseekIn {
    uint64_t fh;
    uint64_t offset;
    uint32_t whence;
    uint32_t padding;
};

struct LseekOut {
    uint64_t offset;
};

struct CopyFileRangeIn {
    uint64_t fh_in;
    uint64_t off_in;
    uint64_t nodeid_out;
    uint64_t fh_out;
    uint64_t off_out;
    uint64_t len;
    uint64_t flags;
};

struct Dirent {
    uint64_t ino;
    uint64_t off;
    uint32_t namelen;
    uint32_t type;
    // name follows, then padding to 8 bytes
};

struct NotifyInvalInodeOut {
    uint64_t ino;
    int64_t off;
    int64_t len;
};

struct BackingMap {
    int32_t fd;
    uint32_t flags;
    uint64_t padding;
};

inline constexpr unsigned long DEV_IOC_CLONE = _IOR(229, 0, uint32_t);
inline constexpr unsigned long DEV_IOC_BACKING_OPEN = _IOW(229, 1, BackingMap);
inline constexpr unsigned long DEV_IOC_BACKING_CLOSE = _IOW(229, 2, uint32_t);

static_assert(sizeof(InHeader) == 40);
static_assert(sizeof(Attr) == 88);
static_assert(sizeof(EntryOut) == 128);
static_assert(sizeof(AttrOut) == 104);
static_assert(sizeof(SetattrIn) == 88);
static_assert(sizeof(OpenOut) == 16);
static_assert(sizeof(InitIn) == 64);
static_assert(sizeof(InitOut) == 64);
static_assert(sizeof(Kstatfs) == 80);
static_assert(sizeof(ReadIn) == 40);
static_assert(sizeof(WriteIn) == 40);
static_assert(sizeof(CopyFileRangeIn) == 56);

}  // namespace sk::fuse
