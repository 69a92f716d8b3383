// The minimal container runtime's native half: start one process in new namespaces inside a
// prepared root filesystem. Mounting the rootfs (a storage driver's job) and waiting for the
// process (Python's, with its own signal forwarding) happen elsewhere.
#pragma once

#include <sys/types.h>

#include <cstdint>

#include <optional>
#include <string>
#include <vector>

namespace sk {

// A range of host ids that container ids 0..count-1 map onto, in order.
struct IdRange {
    uint32_t host = 0;
    uint32_t count = 0;
};

struct ContainerSpec {
    std::string rootfs;                   // an existing directory; it becomes the new root
    std::vector<std::string> argv;        // argv[0] is looked up in the container's PATH
    std::vector<std::string> env;         // "NAME=value", passed to execve as is
    std::string cwd = "/";                // inside the container; must exist
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;            // supplementary groups (the caller's are dropped)
    std::optional<std::string> hostname;  // none: the host's name, in a private uts namespace
    bool user_namespace = false;          // container root 0 = the caller's euid/egid...
    std::optional<IdRange> uid_range;     // ...or 0..count-1 = these host ids (both or
    std::optional<IdRange> gid_range;     // neither; writing them needs CAP_SETUID/SETGID)
    bool host_network = false;            // false: a new net namespace with only lo, up
    bool readonly_rootfs = false;
    int stdio[3] = {0, 1, 2};             // caller's fds that become 0, 1 and 2
};

// Clone a process into new mount, pid, uts, ipc (and net, user) namespaces, set it up inside
// spec.rootfs and exec the command as pid 1 of its pid namespace. Returns its pid (in the
// caller's pid namespace) once execve has succeeded; the caller waits for it (SIGCHLD is its
// exit signal). Any failure before exec throws SysError(errno, "container: <step>") after the
// failed child has been reaped. The container gets SIGKILL if the calling *thread* exits.
//
// Blocks in the kernel: callers holding the GIL release it first.
pid_t spawn_container(const ContainerSpec& spec);

}  // namespace sk
