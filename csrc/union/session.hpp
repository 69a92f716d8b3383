// One FUSE connection: worker threads reading requests from /dev/fuse (each from its own clone
// of the device, FUSE_DEV_IOC_CLONE), decoding them, calling the Engine and writing replies.
// The session also registers backing files for passthrough (FUSE_DEV_IOC_BACKING_OPEN).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "common/unique_fd.hpp"
#include "union/engine.hpp"

namespace sk::unionfs {

class Session final : public BackingOps {
public:
    // max_stack_depth: what the kernel is told when it offers passthrough (1 when every
    // branch is on a plain filesystem, 2 when one is itself stacked, e.g. on overlayfs);
    // 0: no passthrough.
    Session(Engine& engine, UniqueFd dev, unsigned max_stack_depth);
    ~Session() override;

    void start(unsigned threads);
    bool wait_init(std::chrono::milliseconds timeout);
    bool passthrough() const { return passthrough_; }
    int live_workers() const { return live_.load(); }
    void join();
    // Requests served per opcode, for the log at exit.
    std::string stats() const;

    int open_backing(int fd) override;
    void close_backing(int id) override;

private:
    void worker(int fd);
    void handle(int fd, const char* buf, size_t len, std::vector<char>& out);
    void init(int fd, uint64_t unique, const char* arg, size_t arglen);

    Engine& eng_;
    UniqueFd dev_;
    unsigned max_stack_depth_;
    std::vector<UniqueFd> clones_;
    std::vector<std::thread> threads_;
    std::atomic<int> live_{0};
    std::mutex init_mu_;
    std::condition_variable init_cv_;
    bool init_done_ = false;
    bool passthrough_ = false;
    std::atomic<uint64_t> counts_[64] = {};
};

}  // namespace sk::unionfs
