// Overlay mounts through the new mount API. mount(2) takes the whole option string in one
// page, which caps a stack of absolute layer paths at ~150 layers; fsconfig takes one layer
// per call ("lowerdir+", kernel 6.8), so only the kernel's own limit of 500 layers remains.
//
// <sys/mount.h> of glibc 2.36 declares fsopen/fsconfig/fsmount/move_mount and pulls in
// <linux/mount.h> itself; it is the only mount header included.
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>

#include "common/syserror.hpp"
#include "common/unique_fd.hpp"
#include "mount/kmsg_window.hpp"
#include "mount/mount.hpp"

namespace sk {
namespace {

// fsconfig copies a string value with strndup_user(value, 256).
constexpr size_t kMaxConfigString = 255;

// The fs context collects the filesystem's messages ("e overlay: failed to resolve ..."), one
// per read(), ENODATA when empty. Errors are what explains a failure; other lines only when
// there is no error line.
std::string kernel_messages(int fs_fd) {
    std::string errors, others;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fs_fd, buf, sizeof buf);
        if (n <= 0) break;
        std::string line(buf, static_cast<size_t>(n));
        while (!line.empty() && line.back() == '\n') line.pop_back();
        bool is_error = line.starts_with("e ");
        if (line.size() > 2 && line[1] == ' ') line.erase(0, 2);
        std::string& into = is_error ? errors : others;
        if (!into.empty()) into += "; ";
        into += line;
    }
    return errors.empty() ? others : errors;
}

class OverlayContext {
public:
    explicit OverlayContext(const std::string& target) : target_(target) {
        fd_.reset(::fsopen("overlay", FSOPEN_CLOEXEC));
        if (!fd_) throw_errno(target_);
    }

    // A directory parameter: by name, or, past what fsconfig takes as a string, as an open fd.
    void set_dir(const char* key, const std::string& dir) {
        if (dir.size() <= kMaxConfigString) {
            if (::fsconfig(fd_.get(), FSCONFIG_SET_STRING, key, dir.c_str(), 0) != 0) fail(dir);
            return;
        }
        UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!dfd) throw_errno(target_, dir);
        if (::fsconfig(fd_.get(), FSCONFIG_SET_FD, key, nullptr, dfd.get()) != 0) fail(dir);
    }

    // "key=value" or a bare flag ("userxattr", "volatile").
    void set_option(const std::string& option) {
        size_t eq = option.find('=');
        if (option.empty() || eq == 0) throw ValueErr("overlay option without a name: '" + option + "'");
        int rc = eq == std::string::npos
                     ? ::fsconfig(fd_.get(), FSCONFIG_SET_FLAG, option.c_str(), nullptr, 0)
                     : ::fsconfig(fd_.get(), FSCONFIG_SET_STRING, option.substr(0, eq).c_str(),
                                  option.c_str() + eq + 1, 0);
        if (rc != 0) fail(option);
    }

    void attach(bool readonly) {
        if (::fsconfig(fd_.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) fail({});
        UniqueFd mnt(::fsmount(fd_.get(), FSMOUNT_CLOEXEC, readonly ? MOUNT_ATTR_RDONLY : 0));
        if (!mnt) fail({});
        // Until moved, the mount is detached: closing its fd on failure dissolves it.
        if (::move_mount(mnt.get(), "", AT_FDCWD, target_.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0)
            throw_errno(target_);
    }

private:
    // The kernel's message goes into the path: SysError carries no free text, and
    // "<target>: overlayfs: failed to resolve '/x': -2" tells the user what to fix. Overlay
    // writes some explanations into the fs context and others (most, on 6.x) only into the
    // kernel log.
    [[noreturn]] void fail(const std::string& what) {
        int err = errno;
        std::string msg = kernel_messages(fd_.get());
        std::string logged = kmsg_.take("overlayfs: ");
        if (!logged.empty()) msg += (msg.empty() ? "" : "; ") + logged;
        throw SysError(err, msg.empty() ? target_ : target_ + ": " + msg, what);
    }

    std::string target_;
    KmsgWindow kmsg_;  // opened before the context, so it sees everything the mount prints
    UniqueFd fd_;
};

}  // namespace

void mount_overlay(const std::string& target, const OverlaySpec& spec) {
    if (spec.lowerdirs.empty()) throw ValueErr("an overlay needs at least one lower directory");
    OverlayContext ctx(target);
    for (const std::string& dir : spec.lowerdirs) ctx.set_dir("lowerdir+", dir);
    if (spec.upperdir) ctx.set_dir("upperdir", *spec.upperdir);
    if (spec.workdir) ctx.set_dir("workdir", *spec.workdir);
    for (const std::string& option : spec.options) ctx.set_option(option);
    ctx.attach(spec.readonly);
}

}  // namespace sk
