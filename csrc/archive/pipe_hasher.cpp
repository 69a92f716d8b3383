#include "archive/pipe_hasher.hpp"

#include <stdexcept>

#include "archive/sha256.hpp"

namespace sk {

PipeHasher::PipeHasher(BlockPipe& pipe, std::size_t consumer) : pipe_(pipe), consumer_(consumer) {
    thread_ = std::thread([this] {
        try {
            Sha256 sha;
            while (BlockPipe::Block* b = pipe_.pop(consumer_)) {
                sha.update(b->data.get(), b->size);
                pipe_.release(b);
            }
            digest_ = sha.hex_digest();
        } catch (const std::exception& e) {
            error_ = e.what();
            // Keep releasing so the other consumers are never starved of blocks.
            while (BlockPipe::Block* b = pipe_.pop(consumer_)) pipe_.release(b);
        }
    });
}

std::string PipeHasher::finish() {
    join();
    if (!error_.empty()) throw std::runtime_error(error_);
    return digest_;
}

}  // namespace sk
