// A FUSE filesystem serving a pool's thin devices as files (see fuse_ops.hpp), mounted on a
// directory and run by libfuse's multithreaded loop on threads of its own, so that the rest
// of the process (a control socket, loop device setup) goes on meanwhile.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "thin/device_files.hpp"
#include "thin/fuse_ops.hpp"
#include "thin/pool.hpp"

namespace sk::thin {

struct FuseServerOptions {
    unsigned max_threads = 8;
    std::string fsname = "storagekit-thin";  // the mount's source in the mount table
};

class FuseServer {
public:
    // Mounts at once; SysError when the mount fails (with libfuse's reason in the path).
    FuseServer(Pool& pool, const std::string& mountpoint, const FuseServerOptions& opts);
    ~FuseServer();
    FuseServer(const FuseServer&) = delete;
    FuseServer& operator=(const FuseServer&) = delete;

    // Show device `dev` as a file of `size` bytes (EEXIST when shown).
    void show(uint32_t dev, uint64_t size);
    // Hide it: lookups fail at once (the kernel's cached entry is dropped), and wait up to
    // `wait` for its open handles to be released (false when some stay open; they keep
    // working until closed). ENOENT when not shown.
    bool hide(uint32_t dev, std::chrono::milliseconds wait);
    const DeviceFiles& files() const { return files_; }
    const std::string& mountpoint() const { return mountpoint_; }
    dev_t device() const { return dev_; }
    bool running() const;

    // Unmount (lazily) and end the connection: files still open (by a loop device, say)
    // fail with ENOTCONN from then on; returns false when there were any. Workers that do
    // not finish within `grace` are cut off through fusectl's abort. Idempotent.
    bool stop(std::chrono::milliseconds grace);

private:
    void run();

    DeviceFiles files_;
    FuseContext ctx_;
    std::string mountpoint_;
    struct fuse_session* se_ = nullptr;
    dev_t dev_ = 0;
    unsigned max_threads_ = 1;
    std::thread thread_;
    mutable std::mutex mu_;
    std::condition_variable finished_cv_;
    bool finished_ = false;
    bool stopped_ = false;
};

}  // namespace sk::thin
