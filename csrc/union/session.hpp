// One FUSE connection: worker threads reading requests from /dev/fuse (each from its own clone
// of the device, FUSE_DEV_IOC_CLONE) and handing each to its operation's handler (ops.hpp),
// which calls the Engine and replies. The session also registers backing files for
// passthrough (FUSE_DEV_IOC_BACKING_OPEN).
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

namespace sk::union_fs {

class Session final : public BackingOps, public BlockingNotice {
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
    // Readable (an eventfd) once every worker has stopped: the connection is gone.
    int done_fd() const { return done_.get(); }
    void join();
    // Requests served per opcode, for the log at exit.
    std::string stats() const;

    int open_backing(int fd, int& id) override;
    void close_backing(int id) override;
    // The calling worker is about to wait or work for a while: another one takes over reading
    // requests (when it was the one reading).
    void blocking() override;
    // Answers INIT (the request the kernel starts with): what the connection will use, and
    // whether files pass through.
    void init(int fd, uint64_t unique, const char* arg, size_t arglen);

private:
    void worker(int fd);
    // Waits until this thread may read requests; false once the connection is gone.
    bool lead();
    void handle(int fd, const char* buf, size_t len, std::vector<char>& out);
    void worker_done();

    Engine& eng_;
    UniqueFd dev_;
    unsigned max_stack_depth_;
    std::vector<UniqueFd> clones_;
    std::vector<std::thread> threads_;
    std::atomic<int> live_{0};
    UniqueFd done_;
    std::mutex init_mu_;
    std::condition_variable init_cv_;
    bool init_done_ = false;
    bool passthrough_ = false;
    std::atomic<uint64_t> counts_[64] = {};
    // One worker at a time reads requests (the leader); the others wait here to take over.
    std::mutex lead_mu_;
    std::condition_variable lead_cv_;
    bool led_ = false;
    bool stopping_ = false;
    static thread_local bool t_leader;
};

}  // namespace sk::union_fs
