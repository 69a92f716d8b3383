#include "copyup/copy_data.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/vfs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "copyup/node_error.hpp"

namespace sk::copyup {
namespace {

constexpr size_t kBufSize = 1 << 20;

// Errors after which FICLONE cannot work for any file of this pair of filesystems.
bool reflink_unsupported(int err) {
    return err == EOPNOTSUPP || err == ENOTTY || err == EXDEV || err == ENOSYS;
}

// Errors that mean "copy_file_range cannot do this copy", not "the copy failed": the
// read/write loop then does it (or reports the real error).
bool copy_range_refused(int err) {
    return err == EXDEV || err == EOPNOTSUPP || err == ENOSYS || err == EINVAL || err == EBADF ||
           err == ETXTBSY || err == EPERM;
}

bool copy_range_unsupported(int err) { return err == EXDEV || err == EOPNOTSUPP || err == ENOSYS; }

// Filesystems whose copy_file_range always copies: it falls back to cloning on any filesystem
// with remap_file_range (xfs, btrfs, ocfs2, bcachefs, overlayfs or NFS passing it on...), so
// only a known list is trusted.
bool copy_range_never_shares(int dst_fd) {
    struct statfs sf;
    if (::fstatfs(dst_fd, &sf) < 0) return false;
    switch (static_cast<unsigned long>(sf.f_type)) {
        case EXT4_SUPER_MAGIC:  // also ext2 and ext3
        case TMPFS_MAGIC:
        case F2FS_SUPER_MAGIC:
            return true;
        default:
            return false;
    }
}

// Copies [off, off+len) with pread/pwrite. Returns false when the source ended early.
bool read_write(int src, int dst, off_t off, off_t len, std::vector<char>& buf) {
    if (buf.size() < kBufSize) buf.resize(kBufSize);
    while (len > 0) {
        size_t want = static_cast<size_t>(std::min<off_t>(len, static_cast<off_t>(buf.size())));
        ssize_t n = ::pread(src, buf.data(), want, off);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail(Side::src);
        }
        if (n == 0) return false;
        for (ssize_t done = 0; done < n;) {
            ssize_t w = ::pwrite(dst, buf.data() + done, static_cast<size_t>(n - done), off + done);
            if (w < 0) {
                if (errno == EINTR) continue;
                fail(Side::dst);
            }
            done += w;
        }
        off += n;
        len -= n;
    }
    return true;
}

// Copies [off, off+len) at the same offset in dst. Returns false when the source ended early.
bool copy_range(int src, int dst, off_t off, off_t len, FsCaps& caps, DataMethod& method,
                std::vector<char>& buf) {
    bool copied_any = false;
    while (len > 0 && method != DataMethod::readwrite) {
        if (caps.no_copy_range.load(std::memory_order_relaxed)) {
            method = DataMethod::readwrite;
            break;
        }
        loff_t in = off, out = off;
        ssize_t n = ::copy_file_range(src, &in, dst, &out, static_cast<size_t>(len), 0);
        if (n > 0) {
            copied_any = true;
            off += n;
            len -= n;
            continue;
        }
        if (n == 0) {
            // Files of pseudo filesystems report a size but copy nothing this way.
            if (copied_any) return false;
            method = DataMethod::readwrite;
            break;
        }
        if (errno == EINTR) continue;
        if (!copy_range_refused(errno)) fail(Side::both);
        if (copy_range_unsupported(errno)) caps.no_copy_range = true;
        method = DataMethod::readwrite;
    }
    return len <= 0 || read_write(src, dst, off, len, buf);
}

}  // namespace

const char* method_name(DataMethod m) {
    switch (m) {
        case DataMethod::reflink: return "reflink";
        case DataMethod::copy_file_range: return "copy_file_range";
        case DataMethod::readwrite: return "readwrite";
        case DataMethod::none: break;
    }
    return "none";
}

DataMethod copy_file_data(int src, int dst, const struct stat& st, bool reflink, FsCaps& caps,
                          std::vector<char>& buf) {
    const off_t size = st.st_size;
    if (size <= 0) return DataMethod::none;

    if (reflink && !caps.no_reflink.load(std::memory_order_relaxed)) {
        if (::ioctl(dst, FICLONE, src) == 0) return DataMethod::reflink;
        // Any other failure (EINVAL for incompatible inode flags, ETXTBSY for a swap file...)
        // only concerns this file; the plain copy below reports real I/O errors.
        if (reflink_unsupported(errno)) caps.no_reflink = true;
    }

    DataMethod method = DataMethod::copy_file_range;
    if (!reflink) {
        int copies = caps.copy_range_copies.load(std::memory_order_relaxed);
        if (copies == 0) {
            copies = copy_range_never_shares(dst) ? 1 : -1;
            caps.copy_range_copies = copies;
        }
        if (copies < 0) method = DataMethod::readwrite;
    }
    // A file with fewer blocks than its size has holes; one without needs no hole walk.
    const bool sparse = st.st_blocks * 512 < size;
    if (!sparse) {
        copy_range(src, dst, 0, size, caps, method, buf);
        return method;
    }

    off_t pos = 0;
    while (pos < size) {
        off_t data = ::lseek(src, pos, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) break;  // only a hole up to the end
            if (errno != EINVAL && errno != EOPNOTSUPP) fail(Side::src);
            copy_range(src, dst, pos, size - pos, caps, method, buf);  // no hole support
            break;
        }
        if (data >= size) break;
        off_t hole = ::lseek(src, data, SEEK_HOLE);
        if (hole < 0) fail(Side::src);
        hole = std::min(hole, size);
        if (!copy_range(src, dst, data, hole - data, caps, method, buf)) break;
        pos = hole;
    }
    // Trailing holes exist only as the file size.
    if (::ftruncate(dst, size) < 0) fail(Side::dst);
    return method;
}

}  // namespace sk::copyup
