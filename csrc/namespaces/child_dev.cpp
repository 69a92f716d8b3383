// The container's /dev: a small tmpfs, never the host's devtmpfs.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>

#include "namespaces/child_steps.hpp"

namespace sk::ns {
namespace {

struct CharDevice {
    const char* name;      // in /dev
    const char* host;      // the host's node, bound when mknod is refused
    unsigned major, minor;
    const char* mknod_step;
    const char* bind_step;
};

constexpr CharDevice kDevices[] = {
    {"null", "/dev/null", 1, 3, "mknod /dev/null", "bind /dev/null"},
    {"zero", "/dev/zero", 1, 5, "mknod /dev/zero", "bind /dev/zero"},
    {"full", "/dev/full", 1, 7, "mknod /dev/full", "bind /dev/full"},
    {"random", "/dev/random", 1, 8, "mknod /dev/random", "bind /dev/random"},
    {"urandom", "/dev/urandom", 1, 9, "mknod /dev/urandom", "bind /dev/urandom"},
    {"tty", "/dev/tty", 5, 0, "mknod /dev/tty", "bind /dev/tty"},
};

struct DevLink {
    const char* target;
    const char* name;
    const char* step;
};

constexpr DevLink kLinks[] = {
    {"pts/ptmx", "ptmx", "symlink /dev/ptmx"},
    {"/proc/self/fd", "fd", "symlink /dev/fd"},
    {"/proc/self/fd/0", "stdin", "symlink /dev/stdin"},
    {"/proc/self/fd/1", "stdout", "symlink /dev/stdout"},
    {"/proc/self/fd/2", "stderr", "symlink /dev/stderr"},
};

// Without CAP_MKNOD in the initial user namespace the kernel refuses mknod; an empty file
// with the host's node bound onto it behaves the same (the host's devtmpfs mount does not
// carry the nodev that every mount made inside a user namespace gets).
const char* make_device(const CharDevice& d) {
    if (::mknod(d.name, S_IFCHR | 0666, makedev(d.major, d.minor)) == 0) return nullptr;
    if (errno != EPERM) return d.mknod_step;
    int fd = ::open(d.name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) return d.bind_step;
    ::close(fd);
    if (::mount(d.host, d.name, nullptr, MS_BIND, nullptr) != 0) return d.bind_step;
    return nullptr;
}

}  // namespace

const char* mount_dev() {
    if (::mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC | MS_STRICTATIME,
                "mode=755,size=65536k") != 0)
        return "mount /dev";
    if (::chdir("dev") != 0) return "chdir /dev";

    for (const CharDevice& d : kDevices)
        if (const char* step = make_device(d)) return step;

    if (::mkdir("pts", 0755) != 0) return "mkdir /dev/pts";
    // A private instance: the container sees only its own terminals.
    if (::mount("devpts", "pts", "devpts", MS_NOSUID | MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620") != 0)
        return "mount /dev/pts";

    if (::mkdir("shm", 01777) != 0) return "mkdir /dev/shm";
    if (::mount("shm", "shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                "mode=1777,size=65536k") != 0)
        return "mount /dev/shm";

    for (const DevLink& l : kLinks)
        if (::symlink(l.target, l.name) != 0) return l.step;
    return nullptr;
}

}  // namespace sk::ns
