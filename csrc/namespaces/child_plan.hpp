// Everything the container's child process needs, computed before the clone.
//
// The child is a copy of a multithreaded process: another thread may hold the allocator's or
// the dynamic loader's locks at the moment of the clone, so the child may only make system
// calls. Every string, path and array it uses is built here, in the parent.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "namespaces/container.hpp"

namespace sk::ns {

struct ChildPlan {
    explicit ChildPlan(const ContainerSpec& spec);
    // argv and envp point into the strings owned here: never copied or moved.
    ChildPlan(const ChildPlan&) = delete;
    ChildPlan& operator=(const ChildPlan&) = delete;

    std::string rootfs;  // real path

    std::vector<std::string> argv_strings, env_strings;
    std::vector<char*> argv, envp;      // null-terminated, for execve
    std::vector<std::string> exec_paths;  // candidates in the container's PATH, in order
    std::string exec_step;

    std::string cwd, cwd_step;
    bool set_hostname = false;
    std::string hostname, hostname_step;

    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;
    bool set_groups = true;
    std::string groups_step, gid_step, uid_step;

    bool user_namespace = false;
    std::optional<IdRange> uid_range, gid_range;  // as in the spec
    bool new_network = true;
    bool readonly_rootfs = false;
    int stdio[3] = {0, 1, 2};

    // Pipe ends, filled in by the parent once the pipes exist (all O_CLOEXEC, all >= 3).
    int report_fd = -1;        // child writes a ChildFailure here; EOF means exec succeeded
    int report_read_fd = -1;   // the parent's end: closed in the child
    int sync_fd = -1;          // child reads the parent's go-ahead; hangup = parent gone
    int sync_write_fd = -1;    // the parent's end: closed in the child
};

// The directories execvp would try for `command` with `path` as PATH: the command itself when
// it contains a slash, else "<dir>/<command>" for each entry (an empty entry is the working
// directory).
std::vector<std::string> exec_candidates(const std::string& command, const std::string& path);

}  // namespace sk::ns
