#include "thin/data_file.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "common/syserror.hpp"
#include "thin/error.hpp"

namespace sk::thin {

DataFile::DataFile(std::string path, bool read_only) : path_(std::move(path)) {
    fd_.reset(::open(path_.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
    if (!fd_) throw_errno(path_);
    struct stat st;
    if (::fstat(fd_.get(), &st) != 0) throw_errno(path_);
    block_device_ = S_ISBLK(st.st_mode);
    if (!block_device_ && !S_ISREG(st.st_mode))
        throw Error(Fault::bad_argument,
                    "the data device is neither a regular file nor a block device", path_);
}

uint64_t DataFile::size_bytes() const {
    if (block_device_) {
        uint64_t size = 0;
        if (::ioctl(fd_.get(), BLKGETSIZE64, &size) != 0) throw_errno(path_);
        return size;
    }
    struct stat st;
    if (::fstat(fd_.get(), &st) != 0) throw_errno(path_);
    return static_cast<uint64_t>(st.st_size);
}

void DataFile::read(uint64_t off, uint8_t* buf, size_t len) const {
    while (len) {
        ssize_t n = ::pread(fd_.get(), buf, len, static_cast<off_t>(off));
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno(path_);
        }
        if (n == 0) {  // past the end of a file that shrank: reads as zeros
            std::memset(buf, 0, len);
            return;
        }
        buf += n;
        off += static_cast<uint64_t>(n);
        len -= static_cast<size_t>(n);
    }
}

void DataFile::write(uint64_t off, const uint8_t* buf, size_t len) {
    dirty_ = true;
    while (len) {
        ssize_t n = ::pwrite(fd_.get(), buf, len, static_cast<off_t>(off));
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno(path_);
        }
        buf += n;
        off += static_cast<uint64_t>(n);
        len -= static_cast<size_t>(n);
    }
}

void DataFile::write_zeros(uint64_t off, uint64_t len) {
    static const std::vector<uint8_t> zeros(1 << 20, 0);
    while (len) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(len, zeros.size()));
        write(off, zeros.data(), n);
        off += n;
        len -= n;
    }
}

void DataFile::zero(uint64_t off, uint64_t len) {
    dirty_ = true;
    if (block_device_) {
        uint64_t range[2] = {off, len};
        if (::ioctl(fd_.get(), BLKZEROOUT, range) == 0) return;
    } else if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                           static_cast<off_t>(off), static_cast<off_t>(len)) == 0) {
        return;
    }
    write_zeros(off, len);
}

void DataFile::copy(uint64_t src, uint64_t dst, uint64_t len) {
    dirty_ = true;
    if (!block_device_) {
        loff_t in = static_cast<loff_t>(src), out = static_cast<loff_t>(dst);
        uint64_t left = len;
        while (left) {
            ssize_t n = ::copy_file_range(fd_.get(), &in, fd_.get(), &out, left, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;  // unsupported here: finish with plain reads and writes
            left -= static_cast<uint64_t>(n);
        }
        src += len - left;
        dst += len - left;
        len = left;
    }
    std::vector<uint8_t> buf(static_cast<size_t>(std::min<uint64_t>(len, 1 << 20)));
    while (len) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(len, buf.size()));
        read(src, buf.data(), n);
        write(dst, buf.data(), n);
        src += n;
        dst += n;
        len -= n;
    }
}

void DataFile::discard(uint64_t off, uint64_t len) {
    if (block_device_) {
        uint64_t range[2] = {off, len};
        (void)::ioctl(fd_.get(), BLKDISCARD, range);
    } else {
        (void)::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          static_cast<off_t>(off), static_cast<off_t>(len));
    }
}

void DataFile::sync() {
    // Cleared first: a write that ends after this (they may run without the pool's lock)
    // marks the file dirty again for the next sync.
    if (!dirty_.exchange(false)) return;
    if (::fdatasync(fd_.get()) != 0) {
        dirty_ = true;
        throw_errno(path_);
    }
}

}  // namespace sk::thin
