// A bounded stream of byte blocks from one producer thread to one or more consumer threads,
// each of which sees every block: one consumer parses or writes the stream while another
// hashes it, and (de)compression runs in the producer, so the work of a layer stream
// spreads over cores as GNU tar's separate compressor process does. Blocks come from a
// fixed pool, so memory stays bounded whatever the stream size; a block returns to the pool
// once every consumer has released it.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace sk {

class BlockPipe {
public:
    struct Block {
        std::unique_ptr<char[]> data;
        std::size_t size = 0;
        std::size_t refs = 0;
    };

    BlockPipe(std::size_t block_size, std::size_t blocks, std::size_t consumers = 1);
    std::size_t block_size() const { return block_size_; }

    // Producer side. acquire() returns nullptr once a consumer has cancelled. A producer
    // that keeps using a block after pushing it (reading it alongside the consumers) pushes
    // it `retained` and release()s it when done.
    Block* acquire();
    void push(Block* b, bool retained = false);
    // Gives back a block acquired but not pushed.
    void discard(Block* b);
    // No more blocks will come; a non-empty error says why the stream ended early.
    void close(std::string error = {});

    // Consumer side. pop() returns nullptr at the end of the stream (then see error()).
    Block* pop(std::size_t consumer = 0);
    void release(Block* b);
    // A consumer gives up: the producer's next acquire() fails.
    void cancel();

    bool cancelled() const;
    std::string error() const;

private:
    const std::size_t block_size_;
    std::vector<Block> storage_;
    mutable std::mutex mu_;
    std::condition_variable has_free_, has_full_;
    std::deque<Block*> free_;
    std::vector<std::deque<Block*>> full_;  // one queue per consumer
    bool closed_ = false;
    bool cancelled_ = false;
    std::string error_;
};

}  // namespace sk
