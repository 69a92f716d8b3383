// The parent's side of a container's user namespace.
#pragma once

#include <sys/types.h>

namespace sk::ns {

// Map container root onto host_uid/host_gid (one-line maps) in the user namespace of `pid`,
// with setgroups denied, which the kernel requires before an unprivileged gid map and which
// keeps the container from dropping groups the host uses to deny it access.
void write_id_maps(pid_t pid, uid_t host_uid, gid_t host_gid);

}  // namespace sk::ns
