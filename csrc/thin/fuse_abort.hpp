// Aborting a FUSE connection through fusectl: every request waiting on it, and every later
// one, fails with ENOTCONN, and the server's reads from /dev/fuse return ENODEV.
#pragma once

#include <sys/types.h>

namespace sk::thin {

// `dev` is st_dev of the FUSE mount's root. Uses /sys/fs/fuse/connections when fusectl is
// mounted there, else mounts it on a private temporary directory for the moment it takes.
void abort_fuse_connection(dev_t dev);

}  // namespace sk::thin
