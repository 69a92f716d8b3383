#include "archive/tar_output.hpp"

#include <archive_entry.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "common/syserror.hpp"

namespace sk {
namespace {

constexpr std::size_t kBlockSize = 128 << 10;
constexpr std::size_t kBlocks = 4;

struct WriteArchive {
    struct archive* a = archive_write_new();
    ~WriteArchive() {
        if (a) archive_write_free(a);
    }
};

std::string error_of(struct archive* a, const char* what) {
    const char* m = archive_error_string(a);
    return std::string(what) + ": " + (m ? m : "failed");
}

}  // namespace

Compression parse_compression(std::string_view name) {
    if (name == "none") return Compression::none;
    if (name == "gzip") return Compression::gzip;
    if (name == "zstd") return Compression::zstd;
    throw ValueErr("unknown compression '" + std::string(name) + "' (expected none, gzip or zstd)");
}

TarOutput::TarOutput(int fd, Compression compression) : fd_(fd), compression_(compression) {
    // Consumer 0 hashes, consumer 1 (compresses and) writes.
    pipe_ = std::make_unique<BlockPipe>(kBlockSize, kBlocks, 2);
    hasher_ = std::make_unique<PipeHasher>(*pipe_, 0);
    tar_ = archive_write_new();
    if (!tar_) throw std::bad_alloc();
    // Full PAX rather than "restricted": libarchive's restricted mode drops sub-second
    // mtimes unless some other field already needs an extended header. Entries needing
    // nothing extended are plain ustar headers either way. Unblocked (bytes_per_block 0):
    // no padding after the end-of-archive blocks, and data passes through uncopied.
    if (archive_write_set_format_pax(tar_) != ARCHIVE_OK ||
        archive_write_set_format_option(tar_, "pax", "xattrheader", "SCHILY") != ARCHIVE_OK ||
        archive_write_set_bytes_per_block(tar_, 0) != ARCHIVE_OK) {
        std::string msg = error_of(tar_, "tar writer setup");
        stop("aborted");
        archive_write_free(tar_);
        throw std::runtime_error(msg);
    }
    writer_ = std::thread([this] { run_writer(); });
    if (archive_write_open2(tar_, this, nullptr, &TarOutput::tar_write, nullptr, nullptr) !=
        ARCHIVE_OK) {
        std::string msg = error_of(tar_, "tar writer open");
        stop("aborted");
        archive_write_free(tar_);
        throw std::runtime_error(msg);
    }
}

TarOutput::~TarOutput() {
    stop("aborted");
    if (tar_) {
        // Closing would write the end of the archive: this stream is being abandoned.
        archive_write_fail(tar_);
        archive_write_free(tar_);
    }
}

void TarOutput::stop(const char* why) {
    if (block_) {
        pipe_->discard(block_);
        block_ = nullptr;
    }
    pipe_->close(why);
    if (writer_.joinable()) writer_.join();
    hasher_.reset();
}

void TarOutput::fail(int err, std::string what) {
    if (failed_) return;
    out_errno_ = err;
    out_error_ = std::move(what);
    failed_ = true;
}

BlockPipe::Block* TarOutput::current_block() {
    if (!block_ && !failed_) block_ = pipe_->acquire();
    return block_;
}

std::pair<char*, std::size_t> TarOutput::data_window() {
    BlockPipe::Block* b = current_block();
    if (!b) {
        check();
        throw std::runtime_error("output failed");
    }
    return {b->data.get() + b->size, pipe_->block_size() - b->size};
}

la_ssize_t TarOutput::tar_write(struct archive* a, void* self_, const void* buf, size_t size) {
    auto* self = static_cast<TarOutput*>(self_);
    auto* p = static_cast<const char*>(buf);
    size_t left = size;
    while (left) {
        BlockPipe::Block* b = self->current_block();
        if (!b) {
            archive_set_error(a, EIO, "output failed");
            return -1;
        }
        size_t n = std::min(left, self->pipe_->block_size() - b->size);
        // Data read through data_window() is already where it belongs.
        if (p != b->data.get() + b->size) std::memcpy(b->data.get() + b->size, p, n);
        b->size += n;
        p += n;
        left -= n;
        if (b->size == self->pipe_->block_size()) {
            self->block_ = nullptr;
            self->pipe_->push(b);
        }
    }
    return static_cast<la_ssize_t>(size);
}

void TarOutput::write_out(const void* buf, size_t size) {
    auto* p = static_cast<const char*>(buf);
    while (size) {
        ssize_t n = write(fd_, p, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {  // a non-blocking pipe or socket: wait until it drains
                struct pollfd pfd = {fd_, POLLOUT, 0};
                poll(&pfd, 1, -1);
                continue;
            }
            throw SysError(errno, "fd " + std::to_string(fd_));
        }
        p += n;
        size -= static_cast<size_t>(n);
        bytes_ += static_cast<uint64_t>(n);
    }
}

la_ssize_t TarOutput::out_write(struct archive* a, void* self_, const void* buf, size_t size) {
    auto* self = static_cast<TarOutput*>(self_);
    try {
        self->write_out(buf, size);
    } catch (const SysError& e) {
        self->fail(e.err, e.path);
        archive_set_error(a, e.err, "%s", strerror(e.err));
        return -1;
    }
    return static_cast<la_ssize_t>(size);
}

void TarOutput::run_writer() {
    try {
        if (compression_ == Compression::none) {
            while (BlockPipe::Block* b = pipe_->pop(1)) {
                struct Release {
                    BlockPipe& pipe;
                    BlockPipe::Block* b;
                    ~Release() { pipe.release(b); }
                } release{*pipe_, b};
                write_out(b->data.get(), b->size);
            }
            return;
        }
        WriteArchive z;
        struct archive* w = z.a;
        if (!w) throw std::bad_alloc();
        int rc = archive_write_set_format_raw(w);
        if (rc == ARCHIVE_OK) {
            if (compression_ == Compression::gzip) {
                rc = archive_write_add_filter_gzip(w);
                // No timestamp in the gzip header: the same tree compresses the same.
                if (rc == ARCHIVE_OK)
                    rc = archive_write_set_filter_option(w, "gzip", "timestamp", nullptr);
            } else {
                rc = archive_write_add_filter_zstd(w);
            }
        }
        if (rc == ARCHIVE_OK) rc = archive_write_set_bytes_per_block(w, 0);
        if (rc == ARCHIVE_OK)
            rc = archive_write_open2(w, this, nullptr, &TarOutput::out_write, nullptr, nullptr);
        std::unique_ptr<struct archive_entry, void (*)(struct archive_entry*)> e(
            archive_entry_new(), archive_entry_free);
        archive_entry_set_pathname(e.get(), "layer.tar");
        archive_entry_set_filetype(e.get(), AE_IFREG);
        if (rc == ARCHIVE_OK) rc = archive_write_header(w, e.get());
        if (rc != ARCHIVE_OK) throw std::runtime_error(error_of(w, "compressor setup"));

        while (BlockPipe::Block* b = pipe_->pop(1)) {
            const size_t size = b->size;  // the block may be reused once released
            la_ssize_t n = archive_write_data(w, b->data.get(), size);
            pipe_->release(b);
            if (n < 0 || static_cast<size_t>(n) != size) {
                if (failed_) throw SysError(out_errno_, out_error_);
                throw std::runtime_error(error_of(w, "compressor"));
            }
        }
        if (!pipe_->error().empty()) {  // abandoned: leave the output as it is
            archive_write_fail(w);
            return;
        }
        if (archive_write_close(w) != ARCHIVE_OK) {
            if (failed_) throw SysError(out_errno_, out_error_);
            throw std::runtime_error(error_of(w, "compressor"));
        }
    } catch (const SysError& e) {
        fail(e.err, e.path);
        pipe_->cancel();
    } catch (const std::exception& e) {
        fail(0, e.what());
        pipe_->cancel();
    }
    // Keep the queue moving so the tar writer and the hasher are never stuck on us.
    while (BlockPipe::Block* b = pipe_->pop(1)) pipe_->release(b);
}

void TarOutput::check() const {
    if (!failed_) return;
    if (out_errno_) throw SysError(out_errno_, out_error_);
    throw std::runtime_error(out_error_.empty() ? "output failed" : out_error_);
}

TarOutput::Result TarOutput::finish() {
    int rc = archive_write_close(tar_);
    if (block_) {
        BlockPipe::Block* b = block_;
        block_ = nullptr;
        if (b->size)
            pipe_->push(b);
        else
            pipe_->discard(b);
    }
    pipe_->close();
    if (writer_.joinable()) writer_.join();
    check();
    if (rc != ARCHIVE_OK) throw std::runtime_error(error_of(tar_, "tar writer"));
    return Result{bytes_, hasher_->finish()};
}

}  // namespace sk
