// The write side of a layer stream: a PAX tar writer on the calling thread hands its bytes
// to two threads, one hashing them (the diff ID is over the uncompressed tar), the other
// compressing them with a second libarchive writer (raw format + filter) or writing them
// out as they are.
#pragma once

#include <archive.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <memory>
#include <thread>
#include <utility>

#include "archive/block_pipe.hpp"
#include "archive/pipe_hasher.hpp"

namespace sk {

enum class Compression { none, gzip, zstd };
Compression parse_compression(std::string_view name);  // ValueErr for anything else

class TarOutput {
public:
    TarOutput(int fd, Compression compression);
    ~TarOutput();
    TarOutput(const TarOutput&) = delete;
    TarOutput& operator=(const TarOutput&) = delete;

    // The tar writer; use it from the constructing thread only.
    struct archive* tar() { return tar_; }

    // Room to read file data into, in place: bytes put there and then passed to
    // archive_write_data() (same pointer) are not copied again. Never empty.
    std::pair<char*, std::size_t> data_window();

    // Throws the writing thread's error, if any (after a failed tar write call).
    void check() const;

    struct Result {
        uint64_t bytes;      // written to fd
        std::string digest;  // hex SHA-256 of the uncompressed tar
    };
    // Ends the tar (end-of-archive blocks), flushes the compressor, stops the thread.
    Result finish();

private:
    static la_ssize_t tar_write(struct archive*, void* self, const void* buf, size_t size);
    static la_ssize_t out_write(struct archive*, void* self, const void* buf, size_t size);
    void run_writer();
    BlockPipe::Block* current_block();
    void write_out(const void* buf, size_t size);
    void stop(const char* why);

    int fd_;
    Compression compression_;
    BlockPipe pipe_;
    BlockPipe::Block* block_ = nullptr;  // being filled by the tar writer
    struct archive* tar_ = nullptr;
    std::thread thread_;
    std::unique_ptr<PipeHasher> hasher_;
    // Set by the writing thread, read after it stopped (or after a failed write).
    uint64_t bytes_ = 0;
    int out_errno_ = 0;
    std::string out_error_;
};

}  // namespace sk
