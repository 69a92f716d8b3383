#include "union/branches.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "common/syserror.hpp"

namespace sk::union_fs {
namespace {

struct Perm {
    bool known = false;
    bool writable = false;
    bool whiteouts = false;
};

Perm parse_perm(std::string_view p) {
    if (p == "rw" || p == "rw+nolwh") return {true, true, true};
    if (p == "ro+wh" || p == "rr+wh") return {true, false, true};
    if (p == "ro" || p == "rr") return {true, false, false};
    return {};
}

}  // namespace

BranchStack::BranchStack(const std::vector<std::string>& specs, bool readonly) {
    if (specs.empty()) throw ValueErr("a union needs at least one branch");
    if (specs.size() > 32767) throw ValueErr("a union has at most 32767 branches");
    for (size_t i = 0; i < specs.size(); ++i) {
        Branch b;
        b.path = specs[i];
        Perm perm;
        if (size_t eq = specs[i].rfind('='); eq != std::string::npos) {
            Perm p = parse_perm(std::string_view(specs[i]).substr(eq + 1));
            if (p.known) {
                perm = p;
                b.path = specs[i].substr(0, eq);
            }
        }
        if (!perm.known) perm = i == 0 && !readonly ? Perm{true, true, true} : Perm{true, false, true};
        b.writable = perm.writable && !readonly;
        b.whiteouts = perm.whiteouts;
        if (b.writable && i != 0) throw ValueErr("only the top branch can be writable: " + b.path);
        b.root.reset(::open(b.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!b.root) throw_errno(b.path);
        struct stat st;
        if (::fstat(b.root.get(), &st) < 0) throw_errno(b.path);
        b.dev = st.st_dev;
        branches_.push_back(std::move(b));
    }
}

namespace {

int open_beneath(int dirfd, const char* rel, UniqueFd& out) {
    struct open_how how {};
    how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    out.reset();
    long fd = ::syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
    if (fd < 0) return errno == ELOOP ? ENOENT : errno;  // ELOOP: a symlink where a directory was
    out.reset(static_cast<int>(fd));
    return 0;
}

}  // namespace

int BranchStack::open_dir(size_t b, const std::string& rel, UniqueFd& out) const {
    return open_beneath(branches_[b].root.get(), rel.empty() ? "." : rel.c_str(), out);
}

int open_subdir(int dirfd, const std::string& name, UniqueFd& out) {
    if (name.empty() || name.find('/') != std::string::npos) {
        out.reset();
        return ENOENT;
    }
    return open_beneath(dirfd, name.c_str(), out);
}

std::string join_rel(const std::string& dir, std::string_view name) {
    std::string out;
    out.reserve(dir.size() + 1 + name.size());
    out = dir;
    if (!out.empty()) out += '/';
    out += name;
    return out;
}

}  // namespace sk::union_fs
