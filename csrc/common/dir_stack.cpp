#include "common/dir_stack.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "common/syserror.hpp"

namespace sk {

DirStack::DirStack(int rootfd, std::string label, std::size_t max_open)
    : label_(std::move(label)), max_open_(max_open < 2 ? 2 : max_open) {
    struct stat st;
    if (fstat(rootfd, &st) < 0) throw_errno(label_);
    levels_.push_back(Level{rootfd, st.st_dev, st.st_ino, {}});
}

std::string DirStack::path() const {
    std::string p = label_;
    for (std::size_t i = 1; i < levels_.size(); ++i) {
        p += '/';
        p += levels_[i].name;
    }
    return p;
}

void DirStack::push(const std::string& name) {
    int fd = openat(top(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) throw_errno(path() + "/" + name);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        throw SysError(e, path() + "/" + name);
    }
    levels_.push_back(Level{fd, st.st_dev, st.st_ino, name});
    evict_if_needed();
}

void DirStack::evict_if_needed() {
    // Open levels are the root plus [lowest_open_, top]; close from the bottom.
    while (levels_.size() - lowest_open_ > max_open_) {
        Level& l = levels_[lowest_open_];
        close(l.fd);
        l.fd = -1;
        ++lowest_open_;
    }
}

void DirStack::pop() {
    if (levels_.size() <= 1) return;
    UniqueFd child(levels_.back().fd);
    levels_.pop_back();
    std::size_t top_index = levels_.size() - 1;
    if (top_index == 0 || levels_[top_index].fd >= 0) return;

    // The parent was evicted: climb through ".." from the child we are leaving, and make
    // sure we arrive where we came from.
    Level& parent = levels_[top_index];
    int fd = openat(child.get(), "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) throw_errno(path());
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_dev != parent.dev || st.st_ino != parent.ino) {
        close(fd);
        throw SysError(ESTALE, path());
    }
    parent.fd = fd;
    lowest_open_ = top_index;
}

}  // namespace sk
