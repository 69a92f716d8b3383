// Converting a stored tree from one whiteout dialect to another, in place.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "common/dir_entries.hpp"
#include "common/dir_stack.hpp"
#include "common/remove_tree.hpp"
#include "common/syserror.hpp"
#include "common/unique_fd.hpp"
#include "whiteout/whiteout.hpp"

namespace sk::whiteout {
namespace {

class Converter {
public:
    Converter(Dialect from, Dialect to) : from_(from), to_(to) {}

    // Converts the markers of the directory on top of the stack; returns the names of the
    // subdirectories to visit.
    std::vector<std::string> convert_dir(DirStack& stack) {
        const int fd = stack.top();
        const std::string label = stack.path();
        if (is_opaque_fd(fd, from_, label)) {
            clear_opaque_fd(fd, from_, label);
            set_opaque_fd(fd, to_, label);
            ++count_;
        }
        std::vector<std::string> subdirs;
        for (const DirEntry& e : list_dir(fd, label)) {
            if (from_ == Dialect::oci)
                convert_oci_entry(fd, e, label, subdirs);
            else
                convert_overlay_entry(fd, e, label, subdirs);
        }
        return subdirs;
    }

    std::size_t count() const { return count_; }

private:
    static bool lstat_at(int fd, const std::string& name, struct stat& st,
                         const std::string& label) {
        if (fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return true;
        if (errno == ENOENT) return false;
        throw_errno(label + "/" + name);
    }

    static bool is_dir(int fd, const DirEntry& e, const std::string& label) {
        if (e.type != DT_UNKNOWN) return e.type == DT_DIR;
        struct stat st;
        return lstat_at(fd, e.name, st, label) && S_ISDIR(st.st_mode);
    }

    void convert_oci_entry(int fd, const DirEntry& e, const std::string& label,
                           std::vector<std::string>& subdirs) {
        NameKind kind;
        try {
            kind = classify(e.name);
        } catch (const ArchiveError&) {
            kind = NameKind::plain;  // a malformed name is left alone, as content
        }
        if (kind == NameKind::opaque || kind == NameKind::meta) return;
        if (kind == NameKind::plain) {
            if (is_dir(fd, e, label)) subdirs.push_back(e.name);
            return;
        }
        std::string victim = e.name.substr(kPrefix.size());
        remove_tree_at(fd, e.name, label);
        struct stat st;
        if (lstat_at(fd, victim, st, label)) {
            // The layer deleted the lower entry and made a new one with the same name: in
            // overlay that is the new entry alone, opaque if it is a directory.
            if (S_ISDIR(st.st_mode)) {
                UniqueFd sub(openat(fd, victim.c_str(),
                                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
                if (!sub) throw_errno(label + "/" + victim);
                set_opaque_fd(sub.get(), to_, label + "/" + victim);
            }
        } else {
            make_whiteout_at(fd, victim, to_, label);
        }
        ++count_;
    }

    void convert_overlay_entry(int fd, const DirEntry& e, const std::string& label,
                               std::vector<std::string>& subdirs) {
        if (e.type == DT_DIR) {
            subdirs.push_back(e.name);
            return;
        }
        if (e.type != DT_CHR && e.type != DT_UNKNOWN) return;
        struct stat st;
        if (!lstat_at(fd, e.name, st, label)) return;
        if (S_ISDIR(st.st_mode)) {
            subdirs.push_back(e.name);
            return;
        }
        if (!(S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0))) return;
        if (to_ != Dialect::oci) return;  // overlay and overlay-user share the device form
        if (e.name.starts_with(kPrefix))
            throw ArchiveError(label + "/" + e.name +
                               ": whiteout of a name aufs cannot express");
        if (unlinkat(fd, e.name.c_str(), 0) < 0) throw_errno(label + "/" + e.name);
        make_whiteout_at(fd, e.name, to_, label);
        ++count_;
    }

    Dialect from_, to_;
    std::size_t count_ = 0;
};

}  // namespace

std::size_t convert_tree(int rootfd, Dialect from, Dialect to, const std::string& label) {
    if (from == Dialect::none || to == Dialect::none)
        throw ValueErr("convert_whiteouts converts between oci, overlay and overlay-user");
    if (from == to) return 0;

    Converter conv(from, to);
    DirStack stack(rootfd, label);
    std::vector<std::vector<std::string>> pending;
    pending.push_back(conv.convert_dir(stack));
    while (!pending.empty()) {
        std::vector<std::string>& todo = pending.back();
        if (todo.empty()) {
            pending.pop_back();
            stack.pop();
            continue;
        }
        std::string name = std::move(todo.back());
        todo.pop_back();
        stack.push(name);
        struct stat st;
        if (fstat(stack.top(), &st) < 0) throw_errno(stack.path());
        if (st.st_dev != stack.root_dev()) {  // another mount: not part of this layer
            stack.pop();
            continue;
        }
        pending.push_back(conv.convert_dir(stack));
    }
    return conv.count();
}

}  // namespace sk::whiteout
