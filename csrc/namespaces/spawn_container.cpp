// The parent's side of spawn_container: clone, user namespace maps, and the exec report.
#include <fcntl.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <utility>

#include "common/syserror.hpp"
#include "common/unique_fd.hpp"
#include "namespaces/child_plan.hpp"
#include "namespaces/child_report.hpp"
#include "namespaces/container.hpp"
#include "namespaces/container_child.hpp"
#include "namespaces/id_maps.hpp"

// The raw clone below passes flags first, which holds on every architecture but these.
#if defined(__s390__) || defined(__CRIS__)
#error "spawn_container: clone(2) argument order differs on this architecture"
#endif

namespace sk::ns {
namespace {

struct Pipe {
    UniqueFd read, write;
};

// A close-on-exec pipe whose ends are >= 3, so that the child can put the caller's stdio on
// 0, 1, 2 without overwriting them even when the caller's process has 0, 1 or 2 closed.
Pipe make_pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("container: pipe");
    Pipe p{UniqueFd(fds[0]), UniqueFd(fds[1])};
    for (UniqueFd* end : {&p.read, &p.write}) {
        if (end->get() >= 3) continue;
        int moved = ::fcntl(end->get(), F_DUPFD_CLOEXEC, 3);
        if (moved < 0) throw_errno("container: pipe");
        end->reset(moved);
    }
    return p;
}

void check_stdio(const ContainerSpec& spec) {
    static constexpr const char* kNames[3] = {"stdin", "stdout", "stderr"};
    for (int i = 0; i < 3; ++i)
        if (::fcntl(spec.stdio[i], F_GETFD) < 0)
            throw_errno(std::string("container: ") + kNames[i] + " fd " +
                        std::to_string(spec.stdio[i]));
}

int reap(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
}

// Kills and reaps the child unless released: the caller never gets, nor has to clean up
// after, a container that did not start.
class ChildGuard {
public:
    explicit ChildGuard(pid_t pid) : pid_(pid) {}
    ChildGuard(const ChildGuard&) = delete;
    ChildGuard& operator=(const ChildGuard&) = delete;
    ~ChildGuard() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGKILL);
        reap(pid_);
    }
    pid_t pid() const { return pid_; }
    pid_t release() { return std::exchange(pid_, -1); }

private:
    pid_t pid_;
};

// Reads the child's failure record; false on EOF (the exec succeeded).
bool read_failure(int fd, ChildFailure& f) {
    char* buf = reinterpret_cast<char*>(&f);
    size_t got = 0;
    while (got < sizeof f) {
        ssize_t n = ::read(fd, buf + got, sizeof f - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("container: read exec report");
        if (n == 0) break;
        got += static_cast<size_t>(n);
    }
    if (got == 0) return false;
    if (got < sizeof f) throw SysError(EPROTO, "container: short exec report");
    f.step[sizeof f.step - 1] = '\0';
    return true;
}

unsigned long clone_flags(const ChildPlan& plan) {
    unsigned long flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | SIGCHLD;
    if (plan.new_network) flags |= CLONE_NEWNET;
    if (plan.user_namespace) flags |= CLONE_NEWUSER;
    return flags;
}

// fork() would run the atfork handlers (Python's among them) and cannot take namespace flags;
// the raw clone with no stack is a fork into new namespaces. Signals stay blocked across it so
// that no handler of the caller's runs in the child before it resets them.
pid_t clone_child(const ChildPlan& plan) {
    sigset_t all, saved;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &saved);
    long pid = ::syscall(SYS_clone, clone_flags(plan), nullptr, nullptr, nullptr, nullptr);
    if (pid == 0) run_container_child(plan);
    int err = errno;
    ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
    if (pid < 0) throw SysError(err, "container: clone");
    return static_cast<pid_t>(pid);
}

}  // namespace
}  // namespace sk::ns

namespace sk {

pid_t spawn_container(const ContainerSpec& spec) {
    using namespace ns;
    check_stdio(spec);
    ChildPlan plan(spec);
    Pipe report = make_pipe();
    Pipe sync = make_pipe();
    plan.report_fd = report.write.get();
    plan.report_read_fd = report.read.get();
    plan.sync_fd = sync.read.get();
    plan.sync_write_fd = sync.write.get();

    ChildGuard child(clone_child(plan));
    report.write.reset();
    sync.read.reset();

    if (plan.user_namespace) {
        if (plan.uid_range)
            write_id_maps(child.pid(), *plan.uid_range, *plan.gid_range);
        else
            write_id_maps(child.pid(), ::geteuid(), ::getegid());
    }
    const char go = 1;
    ssize_t n;
    do {
        n = ::write(sync.write.get(), &go, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) throw_errno("container: start");

    ChildFailure failure;
    if (read_failure(report.read.get(), failure)) {
        reap(child.release());
        throw SysError(failure.err, std::string("container: ") + failure.step);
    }
    // sync.write closes on return: the child has exec'd and no longer looks at it.
    return child.release();
}

}  // namespace sk
