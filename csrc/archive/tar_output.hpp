// The write side of a layer stream. A PAX tar writer on the calling thread fills blocks that
// two threads read: one hashes them (the diff ID is over the uncompressed tar), the other
// writes them out, compressing first with a second libarchive writer (raw format + filter)
// when asked to, as GNU tar's separate compressor process would. The calling thread is left
// with what it alone can do: walking the tree and reading files.
#pragma once

#include <archive.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
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

    // Throws the output's error, if any (after a failed tar write call).
    void check() const;

    struct Result {
        uint64_t bytes;      // written to fd
        std::string digest;  // hex SHA-256 of the uncompressed tar
    };
    // Ends the tar (end-of-archive blocks), flushes the compressor, stops the threads.
    Result finish();

private:
    static la_ssize_t tar_write(struct archive*, void* self, const void* buf, size_t size);
    static la_ssize_t out_write(struct archive*, void* self, const void* buf, size_t size);
    BlockPipe::Block* current_block();
    void run_writer();
    void write_out(const void* buf, size_t size);
    void fail(int err, std::string what);
    void stop(const char* why);

    int fd_;
    Compression compression_;
    std::unique_ptr<BlockPipe> pipe_;
    std::unique_ptr<PipeHasher> hasher_;
    BlockPipe::Block* block_ = nullptr;  // being filled by the tar writer
    struct archive* tar_ = nullptr;
    std::thread writer_;
    uint64_t bytes_ = 0;  // written to fd (by the writer thread while it runs)
    // The first output error; set before `failed_`, read after seeing it.
    int out_errno_ = 0;
    std::string out_error_;
    std::atomic<bool> failed_{false};
};

}  // namespace sk
