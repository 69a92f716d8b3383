#include "thin/fuse_abort.hpp"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "common/syserror.hpp"
#include "common/unique_fd.hpp"

namespace sk::thin {
namespace {

// fusectl names a connection after the kernel's internal dev_t (major << 20 | minor).
std::string connection_name(dev_t dev) {
    return std::to_string((static_cast<unsigned long>(major(dev)) << 20) | minor(dev));
}

bool write_abort(const std::string& dir, dev_t dev) {
    std::string path = dir + "/" + connection_name(dev) + "/abort";
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) return false;
    return ::write(fd.get(), "1", 1) == 1;
}

}  // namespace

void abort_fuse_connection(dev_t dev) {
    if (write_abort("/sys/fs/fuse/connections", dev)) return;
    char tmpl[] = "/tmp/storagekit-fusectl-XXXXXX";
    if (!::mkdtemp(tmpl)) throw_errno("/tmp/storagekit-fusectl-XXXXXX");
    std::string dir = tmpl;
    if (::mount("fusectl", dir.c_str(), "fusectl", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
        int err = errno;
        ::rmdir(dir.c_str());
        throw SysError(err, dir);
    }
    bool ok = write_abort(dir, dev);
    int err = errno;
    ::umount2(dir.c_str(), MNT_DETACH);
    ::rmdir(dir.c_str());
    if (!ok) throw SysError(err, "/sys/fs/fuse/connections/" + connection_name(dev) + "/abort");
}

}  // namespace sk::thin
