// The last steps before the command runs: its stdio, and the PATH search in the new root.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>

#include "namespaces/child_steps.hpp"

namespace sk::ns {
namespace {

// close_range(first, last, 0), or a loop where the kernel predates it (5.9).
void close_fds(unsigned first, unsigned last) {
    if (first > last) return;
    if (::close_range(first, last, 0) == 0 || errno != ENOSYS) return;
    struct rlimit rl;
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    for (rlim_t fd = first; fd <= last && fd < rl.rlim_cur; ++fd) ::close(static_cast<int>(fd));
}

}  // namespace

const char* redirect_stdio(const ChildPlan& plan, int keep_fd) {
    static constexpr const char* kSteps[3] = {"dup stdin", "dup stdout", "dup stderr"};
    // Through fresh descriptors first, so that any permutation of 0, 1, 2 (stdin=1,
    // stdout=0) works, and so that dup2 always clears close-on-exec on 0, 1, 2 (dup2 of an fd
    // onto itself would keep the flag, and os.pipe() fds have it).
    int fresh[3];
    for (int i = 0; i < 3; ++i) {
        fresh[i] = ::fcntl(plan.stdio[i], F_DUPFD_CLOEXEC, 3);
        if (fresh[i] < 0) return kSteps[i];
    }
    for (int i = 0; i < 3; ++i)
        if (::dup2(fresh[i], i) != i) return kSteps[i];
    // Everything else the caller's process had open (Python's fds without O_CLOEXEC, the
    // fresh copies) stays out of the container; keep_fd (close-on-exec) reports exec errors.
    close_fds(3, static_cast<unsigned>(keep_fd) - 1);
    close_fds(static_cast<unsigned>(keep_fd) + 1, ~0U);
    return nullptr;
}

const char* exec_command(const ChildPlan& plan) {
    // As execvp: a missing candidate moves on to the next; a denied one too, but EACCES is
    // what is reported if nothing else runs; any other error stops the search.
    bool denied = false;
    for (const std::string& path : plan.exec_paths) {
        ::execve(path.c_str(), plan.argv.data(), plan.envp.data());
        switch (errno) {
        case ENOENT:
        case ENOTDIR:
        case ESTALE:
        case ENODEV:
        case ETIMEDOUT:
            break;
        case EACCES:
            denied = true;
            break;
        default:
            return plan.exec_step.c_str();
        }
    }
    errno = denied ? EACCES : ENOENT;
    return plan.exec_step.c_str();
}

}  // namespace sk::ns
