#include "namespaces/container_child.hpp"

#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>

#include "namespaces/child_report.hpp"
#include "namespaces/child_steps.hpp"

namespace sk::ns {
namespace {

// glibc's setuid family changes the credentials of every thread of the process, signalling
// the other threads it knows of and waiting for them. The cloned child has only one thread
// but glibc's list still names the parent's: the raw system calls change this thread alone.
#ifdef SYS_setresuid32
constexpr long kSetgroups = SYS_setgroups32, kSetresgid = SYS_setresgid32,
               kSetresuid = SYS_setresuid32;
#else
constexpr long kSetgroups = SYS_setgroups, kSetresgid = SYS_setresgid, kSetresuid = SYS_setresuid;
#endif

// Handlers installed by the caller (Python's, which write to its wakeup fd) must never run in
// the container; execve would reset caught signals anyway, but not ignored ones.
void reset_signal_dispositions() {
    struct sigaction dfl = {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig)
        if (sig != SIGKILL && sig != SIGSTOP) (void)::sigaction(sig, &dfl, nullptr);
}

// The parent keeps its end of the sync pipe open until it has read the exec report, so a
// hangup means it died. getppid() cannot tell: in a new pid namespace it is always 0.
bool parent_gone(int sync_fd) {
    struct pollfd pfd = {sync_fd, POLLIN, 0};
    int n;
    do {
        n = ::poll(&pfd, 1, 0);
    } while (n < 0 && errno == EINTR);
    return n > 0 && (pfd.revents & (POLLHUP | POLLERR));
}

bool wait_for_parent(int sync_fd) {
    char go;
    ssize_t n;
    do {
        n = ::read(sync_fd, &go, 1);
    } while (n < 0 && errno == EINTR);
    return n == 1;
}

}  // namespace

const char* become_namespace_root() {
    if (::syscall(kSetresgid, 0, 0, 0) != 0) return "setgid 0 in the user namespace";
    if (::syscall(kSetresuid, 0, 0, 0) != 0) return "setuid 0 in the user namespace";
    return nullptr;
}

const char* set_identity(const ChildPlan& plan) {
    if (plan.set_groups &&
        ::syscall(kSetgroups, plan.groups.size(), plan.groups.data()) != 0)
        return plan.groups_step.c_str();
    if (::syscall(kSetresgid, plan.gid, plan.gid, plan.gid) != 0) return plan.gid_step.c_str();
    if (::syscall(kSetresuid, plan.uid, plan.uid, plan.uid) != 0) return plan.uid_step.c_str();
    return nullptr;
}

void run_container_child(const ChildPlan& plan) {
    auto fail = [&plan](const char* step) { report_failure(plan.report_fd, errno, step); };

    ::close(plan.sync_write_fd);
    ::close(plan.report_read_fd);
    reset_signal_dispositions();
    // Device nodes and mount points get exactly the modes asked for; the command gets the
    // caller's umask back.
    mode_t caller_umask = ::umask(0);

    // In a user namespace the parent writes the id maps first; until then this process has
    // no capabilities over its namespaces.
    if (!wait_for_parent(plan.sync_fd)) ::_exit(127);

    // The rootfs is reached through its host path while this process is still host root
    // (whose permission bits the host's directories grant).
    if (const char* step = enter_rootfs(plan)) fail(step);
    if (plan.uid_range)
        if (const char* step = become_namespace_root()) fail(step);
    if (const char* step = mount_container_fs()) fail(step);
    if (const char* step = enter_container_root(plan)) fail(step);
    if (plan.set_hostname && ::sethostname(plan.hostname.data(), plan.hostname.size()) != 0)
        fail(plan.hostname_step.c_str());
    if (plan.new_network)
        if (const char* step = bring_up_loopback()) fail(step);
    if (const char* step = set_identity(plan)) fail(step);
    // After setuid, so that the directory must be reachable by the container's user.
    if (::chdir(plan.cwd.c_str()) != 0) fail(plan.cwd_step.c_str());

    // Set after the credentials change, which clears it.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) fail("prctl PR_SET_PDEATHSIG");
    if (parent_gone(plan.sync_fd)) ::_exit(127);

    if (const char* step = redirect_stdio(plan, plan.report_fd)) fail(step);
    ::umask(caller_umask);
    sigset_t none;
    sigemptyset(&none);
    if (::sigprocmask(SIG_SETMASK, &none, nullptr) != 0) fail("unblock signals");

    fail(exec_command(plan));
    ::_exit(127);  // not reached: fail() exits
}

}  // namespace sk::ns
