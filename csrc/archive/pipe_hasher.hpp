// A thread that computes the SHA-256 of every block passing through a BlockPipe, as one of
// its consumers.
#pragma once

#include <string>
#include <thread>

#include "archive/block_pipe.hpp"

namespace sk {

class PipeHasher {
public:
    PipeHasher(BlockPipe& pipe, std::size_t consumer);
    ~PipeHasher() { join(); }
    PipeHasher(const PipeHasher&) = delete;
    PipeHasher& operator=(const PipeHasher&) = delete;

    // Waits for the end of the stream; the hex digest of all bytes seen.
    std::string finish();

private:
    void join() {
        if (thread_.joinable()) thread_.join();
    }

    BlockPipe& pipe_;
    std::size_t consumer_;
    std::string digest_;
    std::string error_;
    std::thread thread_;
};

}  // namespace sk
