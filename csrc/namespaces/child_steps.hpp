// The steps the container's child takes between clone and execve, in this order.
//
// They run in a copy of a multithreaded process (see child_plan.hpp): system calls only, no
// allocation, no exceptions. Each returns nullptr on success, or the name of the step that
// failed with errno still set by the failing call.
#pragma once

#include "namespaces/child_plan.hpp"

namespace sk::ns {

// Make the mount tree private, bind the rootfs onto itself (nodev in a user namespace) and
// make it the working directory.
const char* enter_rootfs(const ChildPlan& plan);

// With a range of ids the process is still host root, which its user namespace does not map:
// make it the namespace's root (the range's first host id) before it creates anything.
const char* become_namespace_root();

// Mount /proc, /dev (see mount_dev) and, when the kernel allows it, a read-only /sys in the
// working directory (the rootfs), and leave it there.
const char* mount_container_fs();

// A tmpfs /dev in the working directory's "dev" with the usual character devices (device
// nodes where mknod is allowed, bind mounts of the host's nodes where it is not, as in a user
// namespace), a private devpts, /dev/shm and the /proc/self/fd links.
const char* mount_dev();

// pivot_root into the working directory, drop the old root, and make the root read-only when
// the plan says so.
const char* enter_container_root(const ChildPlan& plan);

// Set IFF_UP on "lo" in a new network namespace.
const char* bring_up_loopback();

// setgroups, setgid, setuid on the calling thread only (see container_child.cpp).
const char* set_identity(const ChildPlan& plan);

// dup2 the plan's stdio fds onto 0, 1, 2 and close every other fd but `keep_fd`.
const char* redirect_stdio(const ChildPlan& plan, int keep_fd);

// execve the command along the plan's candidates; returns only on failure, with errno set to
// what execvp would report.
const char* exec_command(const ChildPlan& plan);

}  // namespace sk::ns
