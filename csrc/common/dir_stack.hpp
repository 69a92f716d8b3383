// A stack of open directories for walking a tree iteratively, at any depth, without
// holding one file descriptor per level: only the root and the deepest `max_open` levels
// stay open; an ancestor whose descriptor was closed is reopened through ".." when the walk
// climbs back to it, and its device/inode are checked so a tree changed under the walk is
// detected instead of followed.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <vector>

#include "common/unique_fd.hpp"

namespace sk {

class DirStack {
public:
    // rootfd stays owned by the caller and open for the walk's lifetime; label names it in
    // error messages.
    DirStack(int rootfd, std::string label, std::size_t max_open = 64);

    int top() const { return levels_.back().fd; }
    const std::string& top_name() const { return levels_.back().name; }
    std::size_t depth() const { return levels_.size() - 1; }
    dev_t root_dev() const { return levels_.front().dev; }
    // Path of the top directory for messages: label/a/b.
    std::string path() const;

    // Enters subdirectory `name` of the top directory (never following a symlink).
    void push(const std::string& name);
    // Leaves the top directory; the parent becomes the top again.
    void pop();

private:
    struct Level {
        int fd = -1;  // -1 while evicted; closed by the stack unless it is the root
        dev_t dev = 0;
        ino_t ino = 0;
        std::string name;
    };
    void evict_if_needed();

    std::vector<Level> levels_;
    std::string label_;
    std::size_t max_open_;
    std::size_t lowest_open_ = 1;  // levels [lowest_open_, top] are open (plus the root)
};

}  // namespace sk
