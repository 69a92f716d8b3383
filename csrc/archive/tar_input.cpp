#include "archive/tar_input.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>

#include "common/syserror.hpp"

namespace sk {
namespace {

constexpr std::size_t kBlockSize = 128 << 10;
constexpr std::size_t kBlocks = 4;
constexpr std::size_t kTarConsumer = 0;
constexpr std::size_t kHashConsumer = 1;

struct ReadArchive {
    struct archive* a = archive_read_new();
    ~ReadArchive() {
        if (a) archive_read_free(a);
    }
};

bool is_gzip(const unsigned char* p, std::size_t n) { return n >= 2 && p[0] == 0x1f && p[1] == 0x8b; }

// The signatures of the other compressions a layer may use. Anything else is read as it is
// (and the tar reader then judges it).
bool looks_compressed(const unsigned char* p, std::size_t n) {
    if (n >= 3 && p[0] == 'B' && p[1] == 'Z' && p[2] == 'h') return true;             // bzip2
    if (n >= 6 && std::memcmp(p, "\xfd" "7zXZ\0", 6) == 0) return true;               // xz
    if (n >= 4 && p[0] == 0x28 && p[1] == 0xb5 && p[2] == 0x2f && p[3] == 0xfd) return true;  // zstd
    return false;
}

struct Cancelled {};

}  // namespace

TarInput::TarInput(int fd) : fd_(fd), inbuf_(new char[kBlockSize]) {
    struct stat st;
    if (fstat(fd, &st) < 0) throw_errno("fd " + std::to_string(fd));
    // Sniff the compression from the first block (read here, on the calling thread).
    while (prefix_ < kBlockSize) {
        std::size_t n = read_some(inbuf_.get() + prefix_, kBlockSize - prefix_);
        if (n == 0) {
            input_eof_ = true;
            break;
        }
        prefix_ += n;
    }
    auto* head = reinterpret_cast<const unsigned char*>(inbuf_.get());
    bool gzip = is_gzip(head, prefix_);
    inline_ = !gzip && !looks_compressed(head, prefix_);

    tar_ = archive_read_new();
    if (!tar_) throw std::bad_alloc();
    archive_read_support_format_tar(tar_);
    try {
        start(gzip, S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
    } catch (...) {
        stop();
        archive_read_free(tar_);
        throw;
    }
}

void TarInput::start(bool gzip, bool seekable) {
    if (inline_) {
        filter_code_ = ARCHIVE_FILTER_NONE;
        pipe_ = std::make_unique<BlockPipe>(kBlockSize, kBlocks, 1);
        hasher_ = std::make_unique<PipeHasher>(*pipe_, 0);
    } else {
        // A pipe or socket can block forever; the producer waits on it together with a
        // cancel event so that an abandoned apply can always stop it.
        poll_input_ = !seekable;
        cancel_fd_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!cancel_fd_) throw_errno("eventfd");
        pipe_ = std::make_unique<BlockPipe>(kBlockSize, kBlocks, 2);
        hasher_ = std::make_unique<PipeHasher>(*pipe_, kHashConsumer);
        producer_ = std::thread([this, gzip] {
            std::string error;
            try {
                if (gzip)
                    gunzip();
                else
                    decompress();
            } catch (const Cancelled&) {
                error = "cancelled";
            } catch (const SysError& e) {
                error = std::string("read error: ") + std::strerror(e.err);
            } catch (const std::exception& e) {
                error = e.what();
                if (error.empty()) error = "stream error";
            }
            pipe_->close(std::move(error));
        });
    }
    if (archive_read_open(tar_, this, nullptr, &TarInput::tar_read, nullptr) != ARCHIVE_OK)
        throw ArchiveError(open_error());
}

TarInput::~TarInput() {
    stop();
    if (tar_) archive_read_free(tar_);
}

std::string TarInput::open_error() const {
    std::string err = pipe_->error();
    if (!err.empty()) return err;
    if (ended_ && tar_bytes_ == 0) return "empty stream: not a tar archive";
    const char* m = archive_error_string(tar_);
    return std::string("not a tar archive (") + (m ? m : "unreadable") + ")";
}

void TarInput::stop() {
    if (producer_.joinable()) {
        pipe_->cancel();
        uint64_t one = 1;
        // One write to a fresh eventfd cannot fail in a way that matters here.
        [[maybe_unused]] ssize_t n = write(cancel_fd_.get(), &one, sizeof one);
        producer_.join();
    }
    if (pipe_) {
        if (current_) {
            pipe_->release(current_);
            current_ = nullptr;
        }
        pipe_->close("stopped");  // lets the hasher finish (no-op once the stream ended)
    }
    hasher_.reset();
}

std::size_t TarInput::read_some(char* buf, std::size_t size) {
    for (;;) {
        if (poll_input_) {
            struct pollfd fds[2] = {{fd_, POLLIN, 0}, {cancel_fd_.get(), POLLIN, 0}};
            if (poll(fds, 2, -1) < 0) {
                if (errno == EINTR) continue;
                throw SysError(errno, "fd " + std::to_string(fd_));
            }
            if (fds[1].revents) throw Cancelled{};
        }
        ssize_t n = read(fd_, buf, size);
        if (n >= 0) return static_cast<std::size_t>(n);
        if (errno == EINTR) continue;
        if (errno == EAGAIN && !poll_input_) {  // a non-blocking fd: wait for data
            struct pollfd pfd = {fd_, POLLIN, 0};
            poll(&pfd, 1, -1);
            continue;
        }
        if (errno == EAGAIN) continue;
        throw SysError(errno, "fd " + std::to_string(fd_));
    }
}

// gzip goes to zlib directly rather than through libarchive, whose gzip reader does not
// check the CRC-32 and length in each member's trailer: zlib does, so a corrupt layer is
// refused instead of applied with damaged contents. Members may follow each other (as
// gzip(1) allows); anything else after a member is an error.
void TarInput::gunzip() {
    filter_code_ = ARCHIVE_FILTER_GZIP;
    z_stream zs = {};
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw std::bad_alloc();
    struct End {
        z_stream& zs;
        ~End() { inflateEnd(&zs); }
    } end{zs};
    zs.next_in = reinterpret_cast<Bytef*>(inbuf_.get());
    zs.avail_in = static_cast<uInt>(prefix_);
    prefix_ = 0;
    bool in_member = true;
    BlockPipe::Block* block = nullptr;
    try {
        for (;;) {
            if (zs.avail_in == 0) {
                std::size_t n = read_some(inbuf_.get(), kBlockSize);
                if (n == 0) {
                    if (in_member) throw ArchiveError("gzip stream: truncated input");
                    break;
                }
                zs.next_in = reinterpret_cast<Bytef*>(inbuf_.get());
                zs.avail_in = static_cast<uInt>(n);
            }
            if (!in_member) {
                if (inflateReset(&zs) != Z_OK) throw ArchiveError("gzip stream: reset failed");
                in_member = true;
            }
            if (!block && !(block = pipe_->acquire())) throw Cancelled{};
            zs.next_out = reinterpret_cast<Bytef*>(block->data.get() + block->size);
            zs.avail_out = static_cast<uInt>(pipe_->block_size() - block->size);
            int rc = inflate(&zs, Z_NO_FLUSH);
            block->size = pipe_->block_size() - zs.avail_out;
            if (block->size == pipe_->block_size()) {
                pipe_->push(block);
                block = nullptr;
            }
            if (rc == Z_STREAM_END) {
                in_member = false;
                continue;
            }
            if (rc != Z_OK && rc != Z_BUF_ERROR)
                throw ArchiveError(std::string("gzip stream: ") + (zs.msg ? zs.msg : "corrupt data"));
        }
    } catch (...) {
        if (block) pipe_->discard(block);
        throw;
    }
    if (block) {
        if (block->size)
            pipe_->push(block);
        else
            pipe_->discard(block);
    }
}

la_ssize_t TarInput::raw_read(struct archive* a, void* self_, const void** buf) {
    auto* self = static_cast<TarInput*>(self_);
    *buf = self->inbuf_.get();
    if (self->prefix_) {
        std::size_t n = self->prefix_;
        self->prefix_ = 0;
        return static_cast<la_ssize_t>(n);
    }
    try {
        return static_cast<la_ssize_t>(self->read_some(self->inbuf_.get(), kBlockSize));
    } catch (const Cancelled&) {
        archive_set_error(a, ECANCELED, "cancelled");
    } catch (const SysError& e) {
        archive_set_error(a, e.err, "read error: %s", std::strerror(e.err));
    }
    return -1;
}

void TarInput::decompress() {
    ReadArchive raw;
    struct archive* a = raw.a;
    if (!a) throw std::bad_alloc();
    archive_read_support_filter_bzip2(a);
    archive_read_support_filter_xz(a);
    archive_read_support_filter_zstd(a);
    archive_read_support_format_raw(a);
    archive_read_support_format_empty(a);
    struct archive_entry* entry = nullptr;
    int rc = archive_read_open(a, this, nullptr, &TarInput::raw_read, nullptr);
    if (rc == ARCHIVE_OK) rc = archive_read_next_header(a, &entry);
    if (rc != ARCHIVE_OK && rc != ARCHIVE_EOF) {
        const char* m = archive_error_string(a);
        throw ArchiveError(std::string("unreadable stream: ") + (m ? m : "unknown format"));
    }
    filter_code_ = archive_filter_code(a, 0);
    // Count 2 = one decompressor over the raw input. A compressed stream inside a
    // compressed stream is not a layer, whatever libarchive could peel off.
    if (archive_filter_count(a) > 2)
        throw ArchiveError("nested compression (" + std::string(archive_filter_name(a, 0)) +
                           " inside " + archive_filter_name(a, 1) + ")");
    BlockPipe::Block* block = nullptr;
    try {
        while (rc == ARCHIVE_OK) {
            const void* data;
            size_t size;
            la_int64_t offset;
            int r = archive_read_data_block(a, &data, &size, &offset);
            if (r == ARCHIVE_EOF) break;
            if (r != ARCHIVE_OK) {
                const char* m = archive_error_string(a);
                throw ArchiveError(std::string(archive_filter_name(a, 0)) + " stream: " +
                                   (m ? m : "read error"));
            }
            auto* p = static_cast<const char*>(data);
            while (size) {
                if (!block && !(block = pipe_->acquire())) throw Cancelled{};
                std::size_t n = std::min(size, pipe_->block_size() - block->size);
                std::memcpy(block->data.get() + block->size, p, n);
                block->size += n;
                p += n;
                size -= n;
                if (block->size == pipe_->block_size()) {
                    pipe_->push(block);
                    block = nullptr;
                }
            }
        }
    } catch (...) {
        if (block) pipe_->discard(block);
        throw;
    }
    if (block) pipe_->push(block);
}

// Uncompressed input, on the calling thread: one block read straight from the fd, shared
// with the hasher.
BlockPipe::Block* TarInput::read_block() {
    if (input_eof_ && prefix_ == 0) return nullptr;
    BlockPipe::Block* b = pipe_->acquire();
    if (!b) return nullptr;
    if (prefix_) {
        std::memcpy(b->data.get(), inbuf_.get(), prefix_);
        b->size = prefix_;
        prefix_ = 0;
    }
    try {
        while (!input_eof_ && b->size < pipe_->block_size()) {
            std::size_t n = read_some(b->data.get() + b->size, pipe_->block_size() - b->size);
            if (n == 0) input_eof_ = true;
            b->size += n;
        }
    } catch (...) {
        pipe_->discard(b);
        throw;
    }
    if (b->size == 0) {
        pipe_->discard(b);
        return nullptr;
    }
    pipe_->push(b, true);
    return b;
}

BlockPipe::Block* TarInput::next_block() {
    if (current_) {
        pipe_->release(current_);
        current_ = nullptr;
    }
    if (!inline_) return pipe_->pop(kTarConsumer);
    BlockPipe::Block* b = nullptr;
    try {
        b = read_block();
    } catch (const SysError& e) {
        pipe_->close(std::string("read error: ") + std::strerror(e.err));
        return nullptr;
    }
    if (!b) pipe_->close();
    return b;
}

la_ssize_t TarInput::tar_read(struct archive* a, void* self_, const void** buf) {
    auto* self = static_cast<TarInput*>(self_);
    BlockPipe::Block* b = self->next_block();
    if (!b) {
        self->ended_ = true;
        std::string err = self->pipe_->error();
        if (!err.empty()) {
            archive_set_error(a, EIO, "%s", err.c_str());
            return -1;
        }
        return 0;
    }
    self->current_ = b;
    self->tar_bytes_ += b->size;
    self->raw_names_.feed(b->data.get(), b->size);
    *buf = b->data.get();
    return static_cast<la_ssize_t>(b->size);
}

std::string TarInput::finish() {
    // The tar reader stops at the end-of-archive blocks; whatever follows is still part
    // of the stream the diff ID covers.
    if (!ended_) {
        while (BlockPipe::Block* b = next_block()) {
            tar_bytes_ += b->size;
            current_ = b;
        }
        ended_ = true;
    }
    if (producer_.joinable()) producer_.join();
    std::string err = pipe_->error();
    if (!err.empty()) throw ArchiveError(err);
    return hasher_->finish();
}

std::string TarInput::compression() const {
    switch (filter_code_.load()) {
        case ARCHIVE_FILTER_NONE: return "none";
        case ARCHIVE_FILTER_GZIP: return "gzip";
        case ARCHIVE_FILTER_BZIP2: return "bzip2";
        case ARCHIVE_FILTER_XZ: return "xz";
        case ARCHIVE_FILTER_ZSTD: return "zstd";
        case -1: return "unknown";
        default: return "other";
    }
}

}  // namespace sk
