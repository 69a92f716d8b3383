// storagekit-unionfsd: the union engine's daemon, one process per union mount.
//
//   storagekit-unionfsd [--readonly] [--no-passthrough] [--threads N] [--ready-fd FD]
//                       [--daemonize] -- MOUNTPOINT BRANCH...
//
// storagekit/unionfs.py starts it for every union mount (every container boot on the aufs
// driver). It is a program of its own, not `python -m storagekit.unionfs`: an interpreter
// that starts, imports and loads the extension costs ~30 ms of each mount, this ~1 ms.
// The engine is the same code (csrc/union/serve.hpp), so are the messages and the ready-fd
// protocol; `python -m storagekit.unionfs` still serves the same way.
#include <unistd.h>

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
    "usage: storagekit-unionfsd [--readonly] [--no-passthrough] [--threads N] "
    "[--ready-fd FD] [--daemonize] -- MOUNTPOINT BRANCH...\n";

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr, "storagekit-unionfsd: %s\n%s", why, kUsage);
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

}  // namespace

int main(int argc, char** argv) {
    sk::unionfs::ServeOptions o;
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
        // Detach from the starter: the daemon is nobody's child to reap, and the starter
        // learns the outcome through the ready fd.
        pid_t pid = ::fork();
        if (pid < 0) {
            std::perror("storagekit-unionfsd: fork");
            return 1;
        }
        if (pid > 0) ::_exit(0);
        ::setsid();
        // Keep no directory of the starter busy (it may be on a filesystem to unmount).
        if (::chdir("/") != 0) {
            std::perror("storagekit-unionfsd: chdir /");
            return 1;
        }
    }
    try {
        sk::unionfs::serve(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "storagekit union: %s\n", e.what());
        return 1;
    }
    return 0;
}
