#include "archive/block_pipe.hpp"

namespace sk {

BlockPipe::BlockPipe(std::size_t block_size, std::size_t blocks, std::size_t consumers)
    : block_size_(block_size), storage_(blocks), full_(consumers) {
    for (Block& b : storage_) {
        b.data.reset(new char[block_size]);
        free_.push_back(&b);
    }
}

BlockPipe::Block* BlockPipe::acquire() {
    std::unique_lock lock(mu_);
    has_free_.wait(lock, [&] { return cancelled_ || !free_.empty(); });
    if (cancelled_) return nullptr;
    Block* b = free_.front();
    free_.pop_front();
    b->size = 0;
    return b;
}

void BlockPipe::push(Block* b, bool retained) {
    {
        std::lock_guard lock(mu_);
        b->refs = full_.size() + (retained ? 1 : 0);
        for (auto& q : full_) q.push_back(b);
    }
    has_full_.notify_all();
}

void BlockPipe::discard(Block* b) {
    {
        std::lock_guard lock(mu_);
        free_.push_back(b);
    }
    has_free_.notify_one();
}

void BlockPipe::close(std::string error) {
    {
        std::lock_guard lock(mu_);
        if (closed_) return;
        closed_ = true;
        error_ = std::move(error);
    }
    has_full_.notify_all();
}

BlockPipe::Block* BlockPipe::pop(std::size_t consumer) {
    std::unique_lock lock(mu_);
    auto& q = full_[consumer];
    has_full_.wait(lock, [&] { return closed_ || !q.empty(); });
    if (q.empty()) return nullptr;
    Block* b = q.front();
    q.pop_front();
    return b;
}

void BlockPipe::release(Block* b) {
    {
        std::lock_guard lock(mu_);
        if (--b->refs) return;
        free_.push_back(b);
    }
    has_free_.notify_one();
}

void BlockPipe::cancel() {
    {
        std::lock_guard lock(mu_);
        cancelled_ = true;
    }
    has_free_.notify_all();
}

bool BlockPipe::cancelled() const {
    std::lock_guard lock(mu_);
    return cancelled_;
}

std::string BlockPipe::error() const {
    std::lock_guard lock(mu_);
    return error_;
}

}  // namespace sk
