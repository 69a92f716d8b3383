#include "thin/block_cache.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "common/syserror.hpp"
#include "thin/error.hpp"

namespace sk::thin {

MetaFile::MetaFile(std::string path, bool read_only) : path_(std::move(path)), read_only_(read_only) {
    fd_.reset(::open(path_.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
    if (!fd_) throw_errno(path_);
}

uint64_t MetaFile::size_bytes() const {
    struct stat st;
    if (::fstat(fd_.get(), &st) != 0) throw_errno(path_);
    if (S_ISBLK(st.st_mode)) {
        uint64_t size = 0;
        if (::ioctl(fd_.get(), BLKGETSIZE64, &size) != 0) throw_errno(path_);
        return size;
    }
    return static_cast<uint64_t>(st.st_size);
}

void MetaFile::read_block(uint64_t b, uint8_t* buf) const {
    size_t done = 0;
    while (done < kBlockSize) {
        ssize_t n = ::pread(fd_.get(), buf + done, kBlockSize - done,
                            static_cast<off_t>(b * kBlockSize + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno(path_);
        }
        if (n == 0)
            throw Error(Fault::damaged,
                        "metadata block " + std::to_string(b) + " is beyond the end of the device",
                        path_);
        done += static_cast<size_t>(n);
    }
}

void MetaFile::write_block(uint64_t b, const uint8_t* buf) {
    size_t done = 0;
    while (done < kBlockSize) {
        ssize_t n = ::pwrite(fd_.get(), buf + done, kBlockSize - done,
                             static_cast<off_t>(b * kBlockSize + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno(path_);
        }
        done += static_cast<size_t>(n);
    }
}

void MetaFile::sync() {
    if (::fdatasync(fd_.get()) != 0) throw_errno(path_);
}

void AlignedFree::operator()(uint8_t* p) const { std::free(p); }

BlockBuf alloc_block_buf() {
    void* p = std::aligned_alloc(kBlockSize, kBlockSize);
    if (!p) throw std::bad_alloc();
    return BlockBuf(static_cast<uint8_t*>(p));
}

BlockCache::Entry& BlockCache::touch(uint64_t b, Entry& e) {
    lru_.erase(e.lru);
    lru_.push_front(b);
    e.lru = lru_.begin();
    return e;
}

BlockCache::Entry& BlockCache::insert(uint64_t b, BlockKind kind) {
    Entry e;
    e.data = alloc_block_buf();
    e.kind = kind;
    lru_.push_front(b);
    e.lru = lru_.begin();
    return entries_.emplace(b, std::move(e)).first->second;
}

const uint8_t* BlockCache::read(uint64_t b, BlockKind kind) {
    auto it = entries_.find(b);
    if (it != entries_.end()) return touch(b, it->second).data.get();
    BlockBuf buf = alloc_block_buf();
    file_.read_block(b, buf.get());
    std::string err = check_block(buf.get(), b, kind);
    if (!err.empty()) throw Error(Fault::damaged, err, file_.path());
    Entry& e = insert(b, kind);
    e.data = std::move(buf);
    return e.data.get();
}

uint8_t* BlockCache::create(uint64_t b, BlockKind kind) {
    auto it = entries_.find(b);
    Entry& e = it != entries_.end() ? touch(b, it->second) : insert(b, kind);
    std::memset(e.data.get(), 0, kBlockSize);
    e.kind = kind;
    if (!e.dirty) {
        e.dirty = true;
        dirty_++;
    }
    return e.data.get();
}

uint8_t* BlockCache::modify(uint64_t b, BlockKind kind) {
    read(b, kind);
    Entry& e = entries_.find(b)->second;
    if (!e.dirty) {
        e.dirty = true;
        dirty_++;
    }
    return e.data.get();
}

void BlockCache::discard(uint64_t b) {
    auto it = entries_.find(b);
    if (it == entries_.end()) return;
    if (it->second.dirty) dirty_--;
    lru_.erase(it->second.lru);
    entries_.erase(it);
}

void BlockCache::write_out(uint64_t b, Entry& e) {
    seal_block(e.data.get(), b, e.kind);
    file_.write_block(b, e.data.get());
    e.dirty = false;
    dirty_--;
    blocks_written_++;
}

void BlockCache::flush() {
    if (dirty_ == 0) return;
    // Ascending order turns a commit into mostly sequential writes.
    std::vector<uint64_t> blocks;
    blocks.reserve(dirty_);
    for (auto& [b, e] : entries_)
        if (e.dirty) blocks.push_back(b);
    std::sort(blocks.begin(), blocks.end());
    for (uint64_t b : blocks) write_out(b, entries_.find(b)->second);
}

void BlockCache::trim() {
    while (entries_.size() > capacity_ && !lru_.empty()) {
        uint64_t b = lru_.back();
        Entry& e = entries_.find(b)->second;
        if (e.dirty) write_out(b, e);
        lru_.pop_back();
        entries_.erase(b);
    }
}

void BlockCache::drop_all() {
    entries_.clear();
    lru_.clear();
    dirty_ = 0;
}

}  // namespace sk::thin
