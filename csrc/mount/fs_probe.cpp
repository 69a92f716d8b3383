// Questions drivers ask about a filesystem or the kernel before they rely on it.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "common/dir_entries.hpp"
#include "common/syserror.hpp"
#include "common/unique_fd.hpp"
#include "mount/mount.hpp"

namespace sk {

bool supports_d_type(const std::string& dir) {
    // Overlay needs file types in directory entries (d_type): create a file and see what
    // getdents64 says about it, as a filesystem without d_type answers DT_UNKNOWN.
    UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dfd) throw_errno(dir);
    std::string name = ".d_type-probe-" + std::to_string(::getpid()) + "-" +
                       std::to_string(std::random_device{}());
    UniqueFd f(::openat(dfd.get(), name.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600));
    if (!f) throw_errno(dir + "/" + name);
    f.reset();
    bool typed = false;
    int err = for_each_entry(dfd.get(), [&](std::string_view entry, unsigned char type, uint64_t) {
        if (entry != name) return true;
        typed = type == DT_REG;
        return false;
    });
    ::unlinkat(dfd.get(), name.c_str(), 0);
    if (err) throw SysError(err, dir);
    return typed;
}

bool has_overlay_fsconfig_append() {
    // fsopen("overlay") and the "lowerdir+" parameter (kernel 6.8): set one and discard the
    // context without creating anything.
    UniqueFd fd(::fsopen("overlay", FSOPEN_CLOEXEC));
    if (!fd) return false;
    return ::fsconfig(fd.get(), FSCONFIG_SET_STRING, "lowerdir+", "/", 0) == 0;
}

}  // namespace sk
