// The read side of a layer stream.
//
// The first bytes decide the mode. Uncompressed input is read by the calling thread itself,
// straight into the blocks the tar reader parses, exactly the work GNU tar does; a hashing
// thread computes the SHA-256 of the same blocks (the diff ID) on another core. Compressed
// input gets a producer thread that decompresses (zlib for gzip, libarchive filters over
// the "raw" format for bzip2, xz and zstd) into the blocks, as GNU tar's separate
// decompressor process does. Either way the diff ID covers every decompressed byte,
// including anything after the tar's end-of-archive blocks, and the tar reader is a second
// libarchive reader fed through callbacks.
#pragma once

#include <archive.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "archive/block_pipe.hpp"
#include "archive/pipe_hasher.hpp"
#include "archive/raw_pax_names.hpp"
#include "common/unique_fd.hpp"

namespace sk {

class TarInput {
public:
    explicit TarInput(int fd);
    ~TarInput();
    TarInput(const TarInput&) = delete;
    TarInput& operator=(const TarInput&) = delete;

    // The tar reader; use it from the constructing thread only.
    struct archive* tar() { return tar_; }

    // Why the stream stopped early ("" if it did not): a truncated or corrupt compressed
    // stream, or a read error. Explains a failure of the tar reader.
    std::string stream_error() const { return pipe_->error(); }
    // True when the input held no bytes at all (after decompression).
    bool empty_stream() const { return ended_ && tar_bytes_ == 0; }

    // After the last tar entry: consumes the rest of the stream, stops the threads and
    // returns the hex SHA-256 of the decompressed stream. Throws ArchiveError if the stream
    // was broken.
    std::string finish();

    // "none", "gzip", "bzip2", "xz", "zstd".
    std::string compression() const;

    // The raw PAX names of the entry libarchive just returned, when known (see
    // raw_pax_names.hpp).
    const RawPaxNames::Names* raw_names() {
        return raw_names_.find(static_cast<uint64_t>(archive_read_header_position(tar_)));
    }

private:
    void start(bool gzip, bool seekable);
    static la_ssize_t raw_read(struct archive*, void* self, const void** buf);
    static la_ssize_t tar_read(struct archive*, void* self, const void** buf);
    BlockPipe::Block* next_block();
    BlockPipe::Block* read_block();
    void produce();
    void gunzip();
    void decompress();
    std::size_t read_some(char* buf, std::size_t size);
    std::string open_error() const;
    void stop();

    int fd_;
    bool poll_input_ = false;  // wait for input together with cancel_fd_ (producer thread)
    UniqueFd cancel_fd_;
    std::unique_ptr<char[]> inbuf_;
    std::size_t prefix_ = 0;   // bytes of inbuf_ read while sniffing, not yet handed out
    bool inline_ = false;      // uncompressed: read on the calling thread
    bool input_eof_ = false;
    std::unique_ptr<BlockPipe> pipe_;
    std::unique_ptr<PipeHasher> hasher_;
    BlockPipe::Block* current_ = nullptr;
    struct archive* tar_ = nullptr;
    std::thread producer_;
    std::atomic<int> filter_code_{-1};
    RawPaxNames raw_names_;
    uint64_t tar_bytes_ = 0;
    bool ended_ = false;
};

}  // namespace sk
