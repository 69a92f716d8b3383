#include "common/remove_tree.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "common/dir_entries.hpp"
#include "common/dir_stack.hpp"
#include "common/syserror.hpp"

namespace sk {
namespace {

bool is_dir_entry(int dirfd, const DirEntry& e, const std::string& label) {
    if (e.type != DT_UNKNOWN) return e.type == DT_DIR;
    struct stat st;
    if (fstatat(dirfd, e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT) return false;
        throw_errno(label + "/" + e.name);
    }
    return S_ISDIR(st.st_mode);
}

// Deletes what can be deleted right away in the top directory and returns the
// subdirectories that still have contents.
std::vector<std::string> clear_level(DirStack& stack) {
    std::string label = stack.path();
    int fd = stack.top();
    std::vector<std::string> full_dirs;
    for (const DirEntry& e : list_dir(fd, label)) {
        const char* n = e.name.c_str();
        if (!is_dir_entry(fd, e, label)) {
            if (unlinkat(fd, n, 0) == 0 || errno == ENOENT) continue;
            if (errno != EISDIR) throw_errno(label + "/" + e.name);
        }
        if (unlinkat(fd, n, AT_REMOVEDIR) == 0 || errno == ENOENT) continue;
        if (errno != ENOTEMPTY && errno != EEXIST) throw_errno(label + "/" + e.name);
        full_dirs.push_back(e.name);
    }
    return full_dirs;
}

// Empties the directory on top of the stack, depth first, without recursion.
void empty_top(DirStack& stack) {
    const std::size_t base = stack.depth();
    std::vector<std::vector<std::string>> pending;
    pending.push_back(clear_level(stack));
    for (;;) {
        std::vector<std::string>& todo = pending.back();
        if (!todo.empty()) {
            std::string name = std::move(todo.back());
            todo.pop_back();
            stack.push(name);
            pending.push_back(clear_level(stack));
            continue;
        }
        if (stack.depth() == base) return;
        std::string name = stack.top_name();
        pending.pop_back();
        stack.pop();
        if (unlinkat(stack.top(), name.c_str(), AT_REMOVEDIR) < 0 && errno != ENOENT)
            throw_errno(stack.path() + "/" + name);
    }
}

}  // namespace

bool remove_tree_at(int dirfd, const std::string& name, const std::string& label) {
    const char* n = name.c_str();
    if (unlinkat(dirfd, n, 0) == 0) return true;
    if (errno == ENOENT) return false;
    if (errno != EISDIR) throw_errno(label + "/" + name);
    if (unlinkat(dirfd, n, AT_REMOVEDIR) == 0) return true;
    if (errno == ENOENT) return false;
    if (errno != ENOTEMPTY && errno != EEXIST) throw_errno(label + "/" + name);

    DirStack stack(dirfd, label);
    stack.push(name);
    empty_top(stack);
    stack.pop();
    if (unlinkat(dirfd, n, AT_REMOVEDIR) < 0 && errno != ENOENT) throw_errno(label + "/" + name);
    return true;
}

void empty_dir_at(int dirfd, const std::string& label) {
    DirStack stack(dirfd, label);
    empty_top(stack);
}

}  // namespace sk
