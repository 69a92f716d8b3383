// mount(2) with paths relative to a directory.
//
// mount(2) takes its options in one page. Overlay stacks of many layers fit only with short
// relative layer paths, and the kernel resolves those against the caller's working directory.
// Changing the working directory of a multithreaded process would race every other thread, so
// a vfork()ed child (own working directory, shared memory) changes into the directory, mounts
// and exits; the parent only waits. Docker's overlay2 re-executes itself for the same reason.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "common/syserror.hpp"
#include "common/unique_fd.hpp"
#include "mount/mount.hpp"

namespace sk {

void mount_fs_in_dir(const std::string& dir, const std::string& source, const std::string& target,
                     const char* fstype, unsigned long flags, const char* data) {
    UniqueFd dfd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dfd) throw_errno(dir);
    // Written by the child before it exits; the parent reads it after vfork returns.
    volatile int child_errno = 0;
    pid_t pid = ::vfork();
    if (pid < 0) throw_errno(target);
    if (pid == 0) {
        // Only async-signal-safe calls here: this child shares the parent's memory.
        if (::fchdir(dfd.get()) != 0 ||
            ::mount(source.c_str(), target.c_str(), fstype, flags, data) != 0)
            child_errno = errno;
        ::_exit(0);
    }
    int status = 0;
    while (::waitpid(pid, &status, __WALL) < 0 && errno == EINTR) {
    }
    if (child_errno != 0) throw SysError(child_errno, target, dir);
}

}  // namespace sk
