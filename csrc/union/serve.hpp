// The engine's process: mount a union and serve it until the mount goes away.
#pragma once

#include <string>
#include <vector>

namespace sk::union_fs {

struct ServeOptions {
    std::string mountpoint;
    std::vector<std::string> branches;  // top first; see BranchStack
    bool readonly = false;
    // Told "ok <pid> passthrough=<0|1>\n" once the mount is live, or "error <errno> <what>\n";
    // then closed. -1: nobody is told.
    int ready_fd = -1;
    unsigned threads = 4;
    // Ask the kernel for FUSE passthrough; false keeps all file I/O in the daemon.
    bool passthrough = true;
};

// Mounts the union on mountpoint (mount(2) of "fuse.storagekit" on a fresh /dev/fuse with
// default_permissions and allow_other) and serves it. Returns once the kernel dropped the
// connection: the mount was unmounted, or SIGTERM/SIGINT/SIGHUP made serve unmount it
// lazily and every file still open on it was closed. Throws SysError when it cannot mount.
void serve(const ServeOptions& options);

}  // namespace sk::union_fs
