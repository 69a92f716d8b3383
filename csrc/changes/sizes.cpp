// Sizes of layers: bytes of file data and inodes, hardlinks counted once.
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <unordered_set>

#include "changes/changes.hpp"
#include "changes/node_stat.hpp"
#include "common/dir_entries.hpp"
#include "common/inode_key.hpp"
#include "common/syserror.hpp"
#include "common/unique_fd.hpp"

namespace sk::changes {
namespace {

// Only inodes with several names need remembering; every other one is met once.
class InodeSet {
public:
    bool first_time(const NodeStat& st) {
        return st.nlink <= 1 || seen_.insert(InodeKey{st.dev, st.ino}).second;
    }

private:
    std::unordered_set<InodeKey, InodeKeyHash> seen_;
};

class SizeWalk {
public:
    explicit SizeWalk(std::string root) : root_(std::move(root)) {}
    uint64_t bytes = 0;
    uint64_t inodes = 0;

    void walk(int fd, const std::string& rel) {
        std::vector<DirEntry> entries;
        if (int err = read_dir(fd, entries)) throw SysError(err, root_ + rel);
        sort_by_inode(entries);
        for (const DirEntry& e : entries) {
            std::string path = rel + "/" + e.name;
            NodeStat st;
            if (int err = stat_node(fd, e.name.c_str(), st)) throw SysError(err, root_ + path);
            if (S_ISDIR(st.mode)) {
                ++inodes;
                if (st.mount_root) continue;
                UniqueFd child(::openat(fd, e.name.c_str(),
                                        O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
                if (!child) throw SysError(errno, root_ + path);
                walk(child.get(), path);
                continue;
            }
            if (!seen_.first_time(st)) continue;
            ++inodes;
            if (S_ISREG(st.mode)) bytes += static_cast<uint64_t>(st.size);
        }
    }

private:
    const std::string root_;
    InodeSet seen_;
};

}  // namespace

std::pair<uint64_t, uint64_t> tree_size(const std::string& root) {
    UniqueFd fd(::openat(AT_FDCWD, root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) throw SysError(errno, root);
    SizeWalk w(root);
    w.inodes = 1;  // the root itself
    w.walk(fd.get(), "");
    return {w.bytes, w.inodes};
}

uint64_t paths_size(const std::string& root, const std::vector<std::string>& paths) {
    UniqueFd rootfd(::openat(AT_FDCWD, root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!rootfd) throw SysError(errno, root);
    InodeSet seen;
    uint64_t total = 0;
    for (const std::string& p : paths) {
        size_t start = p.find_first_not_of('/');
        std::string rel = start == std::string::npos ? "." : p.substr(start);
        // Resolved as if root were "/": a symlink inside the layer cannot point the count at
        // a file outside it.
        open_how how{};
        how.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC;
        how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
        long fd;
        do {
            fd = ::syscall(SYS_openat2, rootfd.get(), rel.c_str(), &how, sizeof how);
        } while (fd < 0 && errno == EAGAIN);
        if (fd < 0) {
            if (errno == ENOENT || errno == ENOTDIR) continue;
            throw SysError(errno, root + "/" + rel);
        }
        UniqueFd node(static_cast<int>(fd));
        NodeStat st;
        if (int err = stat_node(node.get(), "", st)) throw SysError(err, root + "/" + rel);
        if (S_ISREG(st.mode) && seen.first_time(st)) total += static_cast<uint64_t>(st.size);
    }
    return total;
}

}  // namespace sk::changes
