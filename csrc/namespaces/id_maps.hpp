// The parent's side of a container's user namespace.
#pragma once

#include <sys/types.h>

#include "namespaces/container.hpp"

namespace sk::ns {

// Map container root onto host_uid/host_gid (one-line maps) in the user namespace of `pid`,
// with setgroups denied, which the kernel requires before an unprivileged gid map and which
// keeps the container from dropping groups the host uses to deny it access.
void write_id_maps(pid_t pid, uid_t host_uid, gid_t host_gid);

// Map container ids 0..count-1 onto the given host ranges; setgroups stays allowed (the
// kernel allows both to a writer with CAP_SETUID and CAP_SETGID over the parent namespace).
void write_id_maps(pid_t pid, const IdRange& uids, const IdRange& gids);

}  // namespace sk::ns
