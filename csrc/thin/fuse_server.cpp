#include "thin/fuse_server.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <utility>
#include <vector>

#include "common/syserror.hpp"
#include "thin/error.hpp"
#include "thin/fuse_abort.hpp"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

namespace sk::thin {
namespace {

// libfuse reports mount failures only through its log: keep the last message for the error.
std::mutex log_mu;
std::string last_log;
void log_to_stderr(enum fuse_log_level, const char* fmt, va_list ap) {
    char buf[512];
    va_list copy;
    va_copy(copy, ap);
    std::vsnprintf(buf, sizeof buf, fmt, copy);
    va_end(copy);
    std::string msg(buf);
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    std::fprintf(stderr, "fuse: %s\n", msg.c_str());
    std::lock_guard lk(log_mu);
    last_log = msg;
}

std::string take_last_log() {
    std::lock_guard lk(log_mu);
    return std::exchange(last_log, {});
}

// Mount options are comma separated, with no way to escape a comma.
std::string option_value(std::string s) {
    for (char& ch : s)
        if (ch == ',' || ch == '\\') ch = '_';
    return s;
}

}  // namespace

FuseServer::FuseServer(Pool& pool, const std::string& mountpoint, const FuseServerOptions& opts)
    : ctx_{pool, files_, pool.block_bytes(), pool.status().discards != "ignore_discard", {}},
      mountpoint_(mountpoint) {
    ::clock_gettime(CLOCK_REALTIME, &ctx_.started);
    struct stat st;
    if (::stat(mountpoint.c_str(), &st) != 0) throw_errno(mountpoint);
    if (!S_ISDIR(st.st_mode)) throw SysError(ENOTDIR, mountpoint);

    static std::once_flag log_once;
    std::call_once(log_once, [] { fuse_set_log_func(log_to_stderr); });

    std::string options = "fsname=" + option_value(opts.fsname) +
                          ",subtype=storagekit-thin,default_permissions,allow_other";
    std::vector<std::string> argv_s{"storagekit-thin", "-o", options};
    std::vector<char*> argv;
    for (auto& s : argv_s) argv.push_back(s.data());
    struct fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
    take_last_log();
    se_ = fuse_session_new(&args, &thin_fuse_ops(), sizeof(fuse_lowlevel_ops), &ctx_);
    if (!se_) throw Error(Fault::mount_failed, "fuse: " + take_last_log(), mountpoint);
    if (fuse_session_mount(se_, mountpoint.c_str()) != 0) {
        std::string why = take_last_log();
        fuse_session_destroy(se_);
        se_ = nullptr;
        throw Error(Fault::mount_failed, "fuse mount failed: " + why, mountpoint);
    }
    max_threads_ = opts.max_threads ? opts.max_threads : 1;
    thread_ = std::thread([this] { run(); });
    if (::stat(mountpoint.c_str(), &st) != 0) {  // answered by the threads just started
        int err = errno;
        stop(std::chrono::milliseconds(0));
        throw SysError(err, mountpoint);
    }
    dev_ = st.st_dev;
}

FuseServer::~FuseServer() {
    try {
        stop(std::chrono::seconds(2));
    } catch (...) {
    }
}

void FuseServer::show(uint32_t dev, uint64_t size) {
    std::lock_guard lk(mu_);
    if (stopped_) throw SysError(ENOTCONN, mountpoint_);
    files_.add(dev, size);
    // A file shown before (with another size, say) may still have attributes in the cache.
    fuse_lowlevel_notify_inval_inode(se_, dev + kFirstDeviceIno, 0, 0);
}

bool FuseServer::hide(uint32_t dev, std::chrono::milliseconds wait) {
    bool idle;
    {
        std::lock_guard lk(mu_);
        if (stopped_) throw SysError(ENOTCONN, mountpoint_);
        idle = files_.hide(dev);
        std::string name = std::to_string(dev);
        // Drop the kernel's cached entry, or the path would still lead to the file for a
        // while. ENOENT (nothing cached) is fine.
        fuse_lowlevel_notify_inval_entry(se_, FUSE_ROOT_ID, name.c_str(), name.size());
    }
    return idle || files_.wait_released(dev, wait);
}

bool FuseServer::running() const {
    std::lock_guard lk(mu_);
    return !finished_;
}

void FuseServer::run() {
    // Signals are for the process's main thread; workers inherit this mask.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    // This process sits under the block layer (a loop device over our files): its allocations
    // must not wait for writeback through that very device. Inherited by the workers.
    ::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
    struct fuse_loop_config* cfg = fuse_loop_cfg_create();
    if (cfg) {
        fuse_loop_cfg_set_clone_fd(cfg, 1);
        fuse_loop_cfg_set_max_threads(cfg, max_threads_);
        fuse_loop_cfg_set_idle_threads(cfg, max_threads_);
        fuse_session_loop_mt(se_, cfg);
        fuse_loop_cfg_destroy(cfg);
    }
    {
        std::lock_guard lk(mu_);
        finished_ = true;
    }
    finished_cv_.notify_all();
}

bool FuseServer::stop(std::chrono::milliseconds grace) {
    {
        std::lock_guard lk(mu_);
        if (stopped_) return true;
        stopped_ = true;
    }
    bool clean = !files_.any_open();
    fuse_session_exit(se_);
    // Workers waiting for pool space (queue_if_no_space) would hold the stop up.
    ctx_.pool.fail_queued_writes();
    // Unmounts lazily (we are root): the mount leaves the namespace now and, without open
    // files, the connection ends at once, so the workers see ENODEV and finish.
    fuse_session_unmount(se_);
    bool finished;
    {
        std::unique_lock lk(mu_);
        finished = finished_cv_.wait_for(lk, grace, [&] { return finished_; });
    }
    if (!finished && dev_) {
        clean = false;
        try {
            abort_fuse_connection(dev_);
        } catch (const SysError& e) {
            std::fprintf(stderr, "fuse: cannot abort the connection of %s: errno %d\n",
                         mountpoint_.c_str(), e.err);
        }
    }
    if (thread_.joinable()) thread_.join();
    fuse_session_destroy(se_);
    se_ = nullptr;
    return clean;
}

}  // namespace sk::thin
