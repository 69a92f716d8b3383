#include "thin/fuse_ops.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "common/syserror.hpp"
#include "thin/disk_format.hpp"
#include "thin/zero_range.hpp"

namespace sk::thin {
namespace {

// The kernel asks again after this long; sizes only change when a device is re-added.
constexpr double kAttrTimeout = 1.0;

FuseContext& ctx(fuse_req_t req) { return *static_cast<FuseContext*>(fuse_req_userdata(req)); }

std::optional<uint32_t> device_of(fuse_ino_t ino) {
    if (ino < kFirstDeviceIno || ino - kFirstDeviceIno > kMaxDeviceId) return std::nullopt;
    return static_cast<uint32_t>(ino - kFirstDeviceIno);
}

// An operation refused with an errno (the pool's own errors are SysErrors).
struct Refused {
    int err;
};

[[noreturn]] void refuse(int err) { throw Refused{err}; }

// Every operation answers exactly once: errors thrown by the pool become the reply's errno.
template <typename Fn>
void answer(fuse_req_t req, Fn&& fn) {
    int err;
    try {
        fn();
        return;
    } catch (const Refused& r) {
        err = r.err;
    } catch (const SysError& e) {
        err = e.err ? e.err : EIO;
    } catch (const std::bad_alloc&) {
        err = ENOMEM;
    } catch (...) {
        err = EIO;
    }
    fuse_reply_err(req, err);
}

void fill_times(const FuseContext& c, struct stat* st) {
    st->st_atim = st->st_mtim = st->st_ctim = c.started;
}

void root_attr(const FuseContext& c, struct stat* st) {
    *st = {};
    st->st_ino = FUSE_ROOT_ID;
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    st->st_blksize = static_cast<blksize_t>(c.block_bytes);
    fill_times(c, st);
}

void device_attr(FuseContext& c, uint32_t dev, uint64_t size, struct stat* st) {
    *st = {};
    st->st_ino = dev + kFirstDeviceIno;
    st->st_mode = S_IFREG | 0600;
    st->st_nlink = 1;
    st->st_size = static_cast<off_t>(size);
    st->st_blksize = static_cast<blksize_t>(c.block_bytes);
    // Space the device holds in the pool, so that du and stat show how thin it is.
    uint64_t mapped = c.pool.device_status(dev).mapped_sectors;
    st->st_blocks = static_cast<blkcnt_t>(std::min<uint64_t>(mapped, (size + 511) / 512));
    fill_times(c, st);
}

// The size of an open or shown device, or ENOENT.
uint64_t device_size(FuseContext& c, fuse_ino_t ino, uint32_t* dev) {
    auto d = device_of(ino);
    if (!d) refuse(ENOENT);
    auto size = c.files.size(*d, true);
    if (!size) refuse(ENOENT);
    *dev = *d;
    return *size;
}

constexpr size_t kZeroBytes = 1 << 20;

void op_init(void*, struct fuse_conn_info* conn) {
    // Loop devices submit direct I/O asynchronously: let several requests be in flight.
    if (conn->capable & FUSE_CAP_ASYNC_DIO) conn->want |= FUSE_CAP_ASYNC_DIO;
    // Reads are answered by splicing from the data file (see op_read).
    if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    conn->max_write = 1 << 20;
    conn->max_background = 64;
    conn->congestion_threshold = 48;
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    answer(req, [&] {
        FuseContext& c = ctx(req);
        if (parent != FUSE_ROOT_ID) refuse(ENOENT);
        uint32_t dev = 0;
        const char* end = name + std::strlen(name);
        auto [p, ec] = std::from_chars(name, end, dev);
        // Only the canonical spelling names a device: "007" is not device 7.
        if (ec != std::errc() || p != end || std::to_string(dev) != name)
            refuse(ENOENT);
        auto size = c.files.size(dev);
        if (!size) refuse(ENOENT);
        fuse_entry_param e{};
        e.ino = dev + kFirstDeviceIno;
        e.attr_timeout = e.entry_timeout = kAttrTimeout;
        device_attr(c, dev, *size, &e.attr);
        fuse_reply_entry(req, &e);
    });
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info*) {
    answer(req, [&] {
        FuseContext& c = ctx(req);
        struct stat st;
        if (ino == FUSE_ROOT_ID) {
            root_attr(c, &st);
        } else {
            uint32_t dev = 0;
            uint64_t size = device_size(c, ino, &dev);
            device_attr(c, dev, size, &st);
        }
        fuse_reply_attr(req, &st, kAttrTimeout);
    });
}

// The size is the device's: fixed while it is shown. Owner, mode and times are not stored.
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                struct fuse_file_info* fi) {
    answer(req, [&] {
        FuseContext& c = ctx(req);
        if (ino == FUSE_ROOT_ID) {
            op_getattr(req, ino, fi);
            return;
        }
        uint32_t dev = 0;
        uint64_t size = device_size(c, ino, &dev);
        if ((to_set & FUSE_SET_ATTR_SIZE) && static_cast<uint64_t>(attr->st_size) != size)
            refuse(EPERM);  // a device has the size it was shown with
        struct stat st;
        device_attr(c, dev, size, &st);
        fuse_reply_attr(req, &st, kAttrTimeout);
    });
}

void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
    answer(req, [&] {
        FuseContext& c = ctx(req);
        if (ino == FUSE_ROOT_ID) refuse(EISDIR);
        auto dev = device_of(ino);
        if (!dev || !c.files.open(*dev)) refuse(ENOENT);
        // No page cache in between: the device's data lives in the pool, and a loop device
        // over this file already caches above it.
        fi->direct_io = 1;
        fi->keep_cache = 0;
        fi->fh = *dev;
        if (fuse_reply_open(req, fi) != 0) c.files.release(*dev);  // the opener went away
    });
}

void op_release(fuse_req_t req, fuse_ino_t, struct fuse_file_info* fi) {
    ctx(req).files.release(static_cast<uint32_t>(fi->fh));
    fuse_reply_err(req, 0);
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info* fi) {
    answer(req, [&] {
        FuseContext& c = ctx(req);
        uint32_t dev = 0;
        uint64_t end = device_size(c, ino, &dev);
        uint64_t pos = static_cast<uint64_t>(off);
        size_t n = pos >= end ? 0 : static_cast<size_t>(std::min<uint64_t>(size, end - pos));
        // The reply is spliced from the data file when the kernel lets us (one copy less),
        // the extents pinned until it is sent; holes come from a buffer of zeros.
        auto extents = c.pool.begin_read(static_cast<uint32_t>(fi->fh), pos, n);
        struct End {
            Pool& p;
            ~End() { p.end_read(); }
        } done{c.pool};
        static const std::vector<char> zeros(kZeroBytes);
        thread_local std::vector<char> mem;
        size_t count = 0;
        for (const ReadExtent& e : extents)
            count += e.mapped ? 1 : (e.len + kZeroBytes - 1) / kZeroBytes;
        mem.assign(sizeof(fuse_bufvec) + std::max<size_t>(count, 1) * sizeof(fuse_buf), 0);
        auto* bv = reinterpret_cast<fuse_bufvec*>(mem.data());
        bv->count = count;
        size_t i = 0;
        int fd = c.pool.data_fd();
        for (const ReadExtent& e : extents) {
            if (e.mapped) {
                fuse_buf& b = bv->buf[i++];
                b.size = e.len;
                b.flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
                b.fd = fd;
                b.pos = static_cast<off_t>(e.data_offset);
                continue;
            }
            for (uint64_t left = e.len; left;) {
                fuse_buf& b = bv->buf[i++];
                b.size = std::min<uint64_t>(left, kZeroBytes);
                b.mem = const_cast<char*>(zeros.data());
                left -= b.size;
            }
        }
        // fuse_reply_data answers (an error too) by itself.
        fuse_reply_data(req, bv, static_cast<fuse_buf_copy_flags>(0));
    });
}

void op_write(fuse_req_t req, fuse_ino_t ino, const char* data, size_t size, off_t off,
              struct fuse_file_info* fi) {
    answer(req, [&] {
        FuseContext& c = ctx(req);
        uint32_t dev = 0;
        uint64_t end = device_size(c, ino, &dev);
        uint64_t pos = static_cast<uint64_t>(off);
        if (size && pos >= end) refuse(EFBIG);  // past the end of the device
        size_t n = static_cast<size_t>(std::min<uint64_t>(size, end - pos));
        c.pool.write(static_cast<uint32_t>(fi->fh), pos, reinterpret_cast<const uint8_t*>(data), n);
        fuse_reply_write(req, n);
    });
}

// Flush (every close) and fsync are what a FLUSH is to a dm-thin device: a commit.
void op_flush(fuse_req_t req, fuse_ino_t, struct fuse_file_info*) {
    answer(req, [&] {
        ctx(req).pool.commit();
        fuse_reply_err(req, 0);
    });
}

void op_fsync(fuse_req_t req, fuse_ino_t, int, struct fuse_file_info*) {
    answer(req, [&] {
        ctx(req).pool.commit();
        fuse_reply_err(req, 0);
    });
}

void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                  struct fuse_file_info* fi) {
    answer(req, [&] {
        FuseContext& c = ctx(req);
        uint32_t dev = 0;
        uint64_t end = device_size(c, ino, &dev);
        uint64_t pos = static_cast<uint64_t>(off), n = static_cast<uint64_t>(len);
        if (off < 0 || len <= 0) refuse(EINVAL);
        bool keep = mode & FALLOC_FL_KEEP_SIZE;
        int kind = mode & ~FALLOC_FL_KEEP_SIZE;
        uint32_t id = static_cast<uint32_t>(fi->fh);
        if (kind == 0) {
            // Reserving space has no meaning in a thin pool; growing the file is refused.
            if (!keep && pos + n > end) refuse(EOPNOTSUPP);
        } else if (kind == FALLOC_FL_PUNCH_HOLE || kind == FALLOC_FL_ZERO_RANGE) {
            if (kind == FALLOC_FL_PUNCH_HOLE && !keep) refuse(EOPNOTSUPP);  // as the kernel
            if (kind == FALLOC_FL_PUNCH_HOLE && !c.unmaps_on_discard)
                refuse(EOPNOTSUPP);  // the pool ignores discards
            if (!keep && pos + n > end) refuse(EOPNOTSUPP);
            if (pos < end)
                zero_range(c.pool, id, pos, std::min(n, end - pos), c.unmaps_on_discard);
        } else {
            refuse(EOPNOTSUPP);  // no other mode has a meaning for a thin device
        }
        fuse_reply_err(req, 0);
    });
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
    if (ino != FUSE_ROOT_ID) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    fuse_reply_open(req, fi);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info*) {
    answer(req, [&] {
        FuseContext& c = ctx(req);
        if (ino != FUSE_ROOT_ID) refuse(ENOTDIR);
        std::vector<std::pair<std::string, fuse_ino_t>> names{{".", FUSE_ROOT_ID},
                                                              {"..", FUSE_ROOT_ID}};
        for (auto& [dev, sz] : c.files.shown())
            names.emplace_back(std::to_string(dev), dev + kFirstDeviceIno);
        std::vector<char> buf(size);
        size_t used = 0;
        for (size_t i = static_cast<size_t>(std::max<off_t>(off, 0)); i < names.size(); i++) {
            struct stat st{};
            st.st_ino = names[i].second;
            st.st_mode = i < 2 ? S_IFDIR : S_IFREG;
            size_t need = fuse_add_direntry(req, buf.data() + used, size - used,
                                            names[i].first.c_str(), &st,
                                            static_cast<off_t>(i + 1));
            if (need > size - used) break;
            used += need;
        }
        fuse_reply_buf(req, buf.data(), used);
    });
}

void op_statfs(fuse_req_t req, fuse_ino_t) {
    answer(req, [&] {
        FuseContext& c = ctx(req);
        PoolStatus s = c.pool.status();
        struct statvfs st{};
        // The loop driver takes its discard granularity from f_bsize: whole data blocks.
        st.f_bsize = st.f_frsize = c.block_bytes;
        st.f_blocks = s.total_data_blocks;
        st.f_bfree = st.f_bavail = s.total_data_blocks - s.used_data_blocks;
        st.f_files = c.files.shown().size() + 1;
        st.f_namemax = 255;
        fuse_reply_statfs(req, &st);
    });
}

fuse_lowlevel_ops make_ops() {
    fuse_lowlevel_ops ops{};
    ops.init = op_init;
    ops.lookup = op_lookup;
    ops.getattr = op_getattr;
    ops.setattr = op_setattr;
    ops.open = op_open;
    ops.release = op_release;
    ops.read = op_read;
    ops.write = op_write;
    ops.flush = op_flush;
    ops.fsync = op_fsync;
    ops.fallocate = op_fallocate;
    ops.opendir = op_opendir;
    ops.readdir = op_readdir;
    ops.statfs = op_statfs;
    return ops;
}

}  // namespace

const fuse_lowlevel_ops& thin_fuse_ops() {
    static const fuse_lowlevel_ops ops = make_ops();
    return ops;
}

}  // namespace sk::thin
