// storagekit-uniond: the union engine's daemon, one process per union mount.
//
//   storagekit-uniond [--readonly] [--no-passthrough] [--threads N] [--ready-fd FD]
//                       [--daemonize] -- MOUNTPOINT BRANCH...
//
// storagekit/engines/union starts it for every union mount (every container boot on the aufs
// driver). It is a program of its own, not an interpreter that starts, imports and loads an
// extension first: union.start() returns a live mount in ~4 ms instead of ~35.
// `python3 -m storagekit.engines.union` runs this program.
//
// Branches: the first is writable (aufs "rw") unless --readonly, the others read-only with
// their whiteouts honoured ("ro+wh"); an aufs suffix "dir=rw|ro|ro+wh|rr" overrides that. At
// most 32767 branches. The writable branch is kept in the aufs on-disk format: deleting an
// entry that a lower branch holds leaves ".wh.<name>", a directory made over a whiteout or
// renamed with lower content gets ".wh..wh..opq", and the top of the branch holds aufs's
// bookkeeping ".wh..wh.aufs" (whiteouts are hard links of it), ".wh..wh.plnk" (pseudo-links of
// hardlinked files copied up; emptied when the mount ends) and ".wh..wh.orph" (copies in
// progress). Names starting with ".wh." are never visible and cannot be created (EPERM); names
// are at most 242 bytes (aufs's limit; ENAMETOOLONG).
//
// The mount: mount(2) of type "fuse.storagekit" with default_permissions and allow_other (the
// kernel checks permissions as for a local filesystem), MS_RDONLY with --readonly. --threads
// workers serve requests, each on its own clone of /dev/fuse. With passthrough (and a kernel
// that offers it, FUSE protocol 7.40+), opened files do their I/O directly on the real file
// (the lower one for reads, the upper copy after a write-open); otherwise through the daemon
// and the page cache.
//
// --ready-fd: a descriptor that gets one line and is closed: "ok <pid> passthrough=<0|1>"
// once the mount is live, or "error <errno> <what>". --daemonize: the daemon detaches; without
// --ready-fd the command returns once the mount serves (status 0) or could not be made
// (status 1, the reason on stderr), so the next command can use it; with --ready-fd it
// returns at once and the line on that descriptor says when. SIGTERM, SIGINT or SIGHUP unmount lazily;
// the daemon exits once every file open on the mount is closed (the kernel then drops the
// connection). Exit status 1 when the mount cannot be made, 2 for bad arguments.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "common/syserror.hpp"
#include "union/serve.hpp"

namespace {

constexpr const char* kUsage =
    "usage: storagekit-uniond [--readonly] [--no-passthrough] [--threads N] "
    "[--ready-fd FD] [--daemonize] -- MOUNTPOINT BRANCH...\n";

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr, "storagekit-uniond: %s\n%s", why, kUsage);
    std::exit(2);
}

long number(const char* option, const char* text, long min, long max) {
    if (!text) usage((std::string(option) + " needs a value").c_str());
    char* end = nullptr;
    errno = 0;
    long v = std::strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max)
        usage((std::string(option) + ": not a number in range: " + text).c_str());
    return v;
}

// The starter's half of --daemonize without --ready-fd: reads the daemon's ready line from
// `in` and gives the exit status: 0 once the mount serves, 1 otherwise (the reason on
// stderr).
int relay_ready(int in) {
    std::string line;
    char buf[512];
    for (;;) {
        ssize_t r = ::read(in, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        line.append(buf, static_cast<size_t>(r));
    }
    if (line.empty()) line = "error " + std::to_string(EIO) + " union engine stopped\n";
    if (line.starts_with("ok ")) return 0;
    // "error <errno> <what>": say it as a one-line error
    std::string rest = line.substr(line.find(' ') + 1);
    int err = std::atoi(rest.c_str());
    std::string what = rest.substr(std::min(rest.size(), rest.find(' ') + 1));
    while (!what.empty() && what.back() == '\n') what.pop_back();
    std::fprintf(stderr, "storagekit-uniond: %s: %s\n", what.c_str(), std::strerror(err));
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    sk::union_fs::ServeOptions o;
    bool daemonize = false;
    int i = 1;
    for (; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--") {
            i++;
            break;
        }
        if (a == "--readonly") {
            o.readonly = true;
        } else if (a == "--no-passthrough") {
            o.passthrough = false;
        } else if (a == "--daemonize") {
            daemonize = true;
        } else if (a == "--threads" || a == "--ready-fd") {
            const char* value = i + 1 < argc ? argv[++i] : nullptr;
            if (a == "--threads")
                o.threads = static_cast<unsigned>(number("--threads", value, 1, 256));
            else
                o.ready_fd = static_cast<int>(number("--ready-fd", value, 0, 1 << 20));
        } else if (a == "-h" || a == "--help") {
            std::fputs(kUsage, stdout);
            return 0;
        } else {
            usage(("unknown option " + a).c_str());
        }
    }
    if (argc - i < 2) usage("a mount point and at least one branch are needed");
    o.mountpoint = argv[i++];
    for (; i < argc; i++) o.branches.emplace_back(argv[i]);

    if (daemonize) {
        // Detach from the starter: the daemon is nobody's child to reap. Without --ready-fd
        // the starter returns only once the mount serves (or failed): it waits for the
        // daemon's ready line on a pipe of its own. With one, whoever gave it waits there
        // (and may give up waiting), so the starter returns at once.
        int pipefd[2] = {-1, -1};
        if (o.ready_fd < 0 && ::pipe2(pipefd, O_CLOEXEC) < 0) {
            std::perror("storagekit-uniond: pipe");
            return 1;
        }
        pid_t pid = ::fork();
        if (pid < 0) {
            std::perror("storagekit-uniond: fork");
            return 1;
        }
        if (pid > 0) {
            if (pipefd[0] < 0) ::_exit(0);
            ::close(pipefd[1]);
            ::_exit(relay_ready(pipefd[0]));
        }
        if (pipefd[1] >= 0) {
            ::close(pipefd[0]);
            o.ready_fd = pipefd[1];
        }
        ::setsid();
        // Keep no directory of the starter busy (it may be on a filesystem to unmount).
        if (::chdir("/") != 0) {
            std::perror("storagekit-uniond: chdir /");
            return 1;
        }
    }
    try {
        sk::union_fs::serve(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "storagekit union: %s\n", e.what());
        return 1;
    }
    return 0;
}
