#include "union/serve.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/syserror.hpp"
#include "union/engine.hpp"
#include "union/session.hpp"

namespace sk::union_fs {
namespace {

// Writes the one line the starter waits for, once.
class Ready {
public:
    explicit Ready(int fd) : fd_(fd) {}
    ~Ready() { tell("error " + std::to_string(EIO) + " union engine stopped\n"); }
    void tell(const std::string& line) {
        if (fd_ < 0) return;
        ssize_t r = ::write(fd_, line.data(), line.size());
        (void)r;
        ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_;
};

// Branches and their files cost descriptors: allow as many as the system does.
void raise_nofile() {
    struct rlimit rl;
    if (::getrlimit(RLIMIT_NOFILE, &rl) < 0) return;
    rlim_t want = 1 << 20;
    if (FILE* f = std::fopen("/proc/sys/fs/nr_open", "r")) {
        unsigned long v;
        if (std::fscanf(f, "%lu", &v) == 1) want = v;
        std::fclose(f);
    }
    struct rlimit up{want, want};
    if (::setrlimit(RLIMIT_NOFILE, &up) < 0) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }
}

// The kernel refuses a backing file whose filesystem is stacked as deep as the FUSE mount
// says it is: the mount claims one more than its deepest branch (2 at most).
unsigned stack_depth(const BranchStack& branches) {
    constexpr long kFuseMagic = 0x65735546;
    for (size_t b = 0; b < branches.size(); ++b) {
        struct statfs s;
        if (::fstatfs(branches[b].root.get(), &s) < 0) continue;
        if (s.f_type == OVERLAYFS_SUPER_MAGIC || s.f_type == kFuseMagic ||
            s.f_type == ECRYPTFS_SUPER_MAGIC)
            return 2;
    }
    return 1;
}

// The index bounds can be lowered from the environment (tests make the cache overflow).
IndexLimits index_limits() {
    IndexLimits l;
    if (const char* v = std::getenv("STORAGEKIT_UNION_INDEX_FDS")) l.fds = std::strtoull(v, nullptr, 10);
    if (const char* v = std::getenv("STORAGEKIT_UNION_INDEX_NAMES"))
        l.names = std::strtoull(v, nullptr, 10);
    return l;
}

void mount_union(const ServeOptions& o, int devfd, mode_t rootmode) {
    char data[160];
    std::snprintf(data, sizeof data,
                  "fd=%d,rootmode=%o,user_id=%u,group_id=%u,default_permissions,allow_other",
                  devfd, rootmode & (S_IFMT | 07777), ::getuid(), ::getgid());
    unsigned long flags = o.readonly ? MS_RDONLY : 0;
    if (::mount("storagekit", o.mountpoint.c_str(), "fuse.storagekit", flags, data) == 0) return;
    if (errno == ENODEV && ::mount("storagekit", o.mountpoint.c_str(), "fuse", flags, data) == 0)
        return;
    throw_errno(o.mountpoint);
}

}  // namespace

void serve(const ServeOptions& o) {
    Ready ready(o.ready_fd);
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGHUP);
    bool mounted = false;
    try {
        raise_nofile();
        Engine engine(BranchStack(o.branches, o.readonly), index_limits());
        UniqueFd dev(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
        if (!dev) throw_errno("/dev/fuse");
        int devfd = dev.get();
        mount_union(o, devfd, engine.root_mode());
        mounted = true;
        // Only the waiting loop below takes these signals (through a signalfd); the workers
        // never see them.
        pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
        UniqueFd sigfd(::signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK));
        if (!sigfd) throw_errno("signalfd");
        Session session(engine, std::move(dev), o.passthrough ? stack_depth(engine.branches()) : 0);
        session.start(o.threads);
        if (!session.wait_init(std::chrono::seconds(30)))
            throw KindError("not_started", ETIMEDOUT, "the kernel did not start the connection",
                            o.mountpoint);
        ready.tell("ok " + std::to_string(::getpid()) +
                   " passthrough=" + (session.passthrough() ? "1" : "0") + "\n");
        // Sleeps until a stop signal comes (then unmounts lazily and goes on waiting) or the
        // last worker has seen the connection end.
        bool asked = false;
        while (session.live_workers() > 0) {
            struct pollfd p[2] = {{session.done_fd(), POLLIN, 0}, {sigfd.get(), POLLIN, 0}};
            if (::poll(p, 2, -1) < 0) {
                if (errno == EINTR) continue;
                throw_errno("poll");
            }
            if (p[1].revents & POLLIN) {
                struct signalfd_siginfo si;
                while (::read(sigfd.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
                }
                if (!asked) {
                    asked = true;
                    ::umount2(o.mountpoint.c_str(), MNT_DETACH);
                }
            }
        }
        session.join();
        engine.shutdown();
        std::fprintf(stderr, "storagekit union %s: done; requests by opcode: %s\n",
                     o.mountpoint.c_str(), session.stats().c_str());
    } catch (const SysError& e) {
        if (mounted) ::umount2(o.mountpoint.c_str(), MNT_DETACH);
        std::string what = dynamic_cast<const KindError*>(&e) ? e.what()
                           : e.path.empty()                   ? "union"
                                                              : e.path;
        ready.tell("error " + std::to_string(e.err) + " " + what + "\n");
        throw;
    } catch (const std::exception& e) {
        if (mounted) ::umount2(o.mountpoint.c_str(), MNT_DETACH);
        ready.tell("error " + std::to_string(EINVAL) + " " + e.what() + "\n");
        throw;
    }
}

}  // namespace sk::union_fs
