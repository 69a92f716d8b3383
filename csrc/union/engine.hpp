// The union filesystem: aufs branch semantics over a BranchStack, one operation per FUSE
// request. Names are looked up top-down honouring ".wh.<name>" and ".wh..wh..opq"; anything
// that changes an entry of a read-only branch first copies it (and its parent directories) up
// to the writable branch; deletions of lower entries leave whiteouts there. The writable
// branch stays in the aufs on-disk format, with aufs's bookkeeping at its top:
// ".wh..wh.aufs" (the file whiteouts are hard links of), ".wh..wh.plnk" (pseudo-links of
// hardlinked files copied up) and ".wh..wh.orph" (where copies are made before they appear).
//
// Operations return 0 or an errno value. One mutex serialises everything that touches names;
// reads and writes of open files do not take it.
#pragma once

#include <sys/stat.h>
#include <sys/statfs.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "union/branches.hpp"
#include "union/node.hpp"
#include "union/xino.hpp"

namespace sk::unionfs {

struct Caller {
    uid_t uid = 0;
    gid_t gid = 0;
};

struct Entry {
    uint64_t id = 0;
    struct stat st {};
    double entry_timeout = 0;
    double attr_timeout = 0;
};

struct AttrResult {
    struct stat st {};
    double timeout = 0;
};

struct OpenResult {
    FileHandle* fh = nullptr;
    uint32_t open_flags = 0;
    int backing_id = 0;
};

struct SetattrArgs {
    uint32_t valid = 0;  // fuse FATTR_* bits
    mode_t mode = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    off_t size = 0;
    struct timespec atime {}, mtime {};
    FileHandle* fh = nullptr;
};

// How the kernel gets a backing file for passthrough: the session owns /dev/fuse.
struct BackingOps {
    virtual ~BackingOps() = default;
    virtual int open_backing(int fd) = 0;  // backing id > 0, or -errno
    virtual void close_backing(int id) = 0;
};

class Engine {
public:
    explicit Engine(BranchStack branches);
    ~Engine();

    // Called once the kernel answered INIT.
    void enable_passthrough(BackingOps* ops) {
        backing_ = ops;
        passthrough_ = ops != nullptr;
    }
    bool passthrough() const { return passthrough_; }

    // Removes the bookkeeping that only lives as long as the mount (pseudo-links, half-made
    // copies). Called when the mount is gone.
    void shutdown();

    mode_t root_mode() const;
    const BranchStack& branches() const { return br_; }

    int lookup(uint64_t parent, const std::string& name, Entry& out);
    void forget(uint64_t id, uint64_t nlookup);
    int getattr(uint64_t id, FileHandle* fh, AttrResult& out);
    int setattr(uint64_t id, const SetattrArgs& a, AttrResult& out);
    int readlink(uint64_t id, std::string& out);
    int mknod(uint64_t parent, const std::string& name, mode_t mode, dev_t rdev, mode_t umask,
              const Caller& c, Entry& out);
    int mkdir(uint64_t parent, const std::string& name, mode_t mode, mode_t umask,
              const Caller& c, Entry& out);
    int symlink(uint64_t parent, const std::string& name, const std::string& target,
                const Caller& c, Entry& out);
    int create(uint64_t parent, const std::string& name, int flags, mode_t mode, mode_t umask,
               const Caller& c, Entry& out, OpenResult& open);
    int unlink(uint64_t parent, const std::string& name);
    int rmdir(uint64_t parent, const std::string& name);
    int rename(uint64_t parent, const std::string& name, uint64_t newparent,
               const std::string& newname, unsigned flags);
    int link(uint64_t id, uint64_t newparent, const std::string& newname, Entry& out);
    int statfs(struct statfs& out);

    int open(uint64_t id, int flags, OpenResult& out);
    void release(FileHandle* fh);
    // Data through the daemon (no passthrough).
    ssize_t read(FileHandle* fh, char* buf, size_t size, off_t off);
    ssize_t write(FileHandle* fh, const char* buf, size_t size, off_t off);
    int fsync(FileHandle* fh, bool datasync);
    int fallocate(FileHandle* fh, int mode, off_t off, off_t len);
    int lseek(FileHandle* fh, off_t off, int whence, off_t& out);
    ssize_t copy_file_range(FileHandle* in, off_t off_in, FileHandle* out, off_t off_out,
                            size_t len, unsigned flags);

    int opendir(uint64_t id, DirHandle*& out);
    // Lookups of entries [from, from + count) of a listing, for READDIRPLUS: out[i].id stays
    // 0 for an entry the kernel must look up itself (directories, ".", "..", anything changed
    // since the listing). Every entry with an id counts as one lookup.
    void plus_entries(DirHandle* dh, size_t from, size_t count, std::vector<Entry>& out);
    void releasedir(DirHandle* dh);
    int fsyncdir(uint64_t id, bool datasync);
    int syncfs();

    // The value's length (value filled when size > 0) or -errno.
    ssize_t getxattr(uint64_t id, const std::string& name, std::string& value, size_t size);
    ssize_t listxattr(uint64_t id, std::string& value, size_t size);
    int setxattr(uint64_t id, const std::string& name, const std::string& value, int flags);
    int removexattr(uint64_t id, const std::string& name);

private:
    // ---- where things are (engine_core.cpp)
    struct Found {
        bool found = false;
        int branch = -1;
        struct stat st {};
        std::vector<int> layers;  // when a directory
    };
    NodePtr node(uint64_t id);  // nullptr when unknown
    NodePtr root() const { return root_; }
    // The path of a node's entry relative to a branch root; nullopt when it has no name.
    std::optional<std::string> rel_path(const Node& n) const;
    // Brings branch/layers of n (and its ancestors) up to the current layout.
    int refresh(Node& n);
    int find_entry(Node& parent, const std::string& name, Found& f);
    int find_entry_in(const std::string& parent_rel, const std::vector<int>& layers,
                      const std::string& name, Found& f);
    // Does a branch below the top one hold `name` in this directory (visible past whiteouts)?
    bool lower_has(Node& parent, const std::string& name);
    // The union ino of an entry found in branch b.
    uint64_t ino_of(int b, const struct stat& st);
    // The node for an entry found under parent: the existing one for its ino, or a new one
    // (registered with the kernel when `expose`).
    NodePtr node_for(const NodePtr& parent, const std::string& name, const Found& f, bool expose);
    void fill_entry(Node& n, const struct stat& real, Entry& out);
    void adjust_stat(const Node& n, struct stat& st) const;
    double attr_timeout(const Node& n) const;
    int stat_node(Node& n, struct stat& st);
    void drop_name(Node& n, const NodePtr& parent, const std::string& name);
    void add_name(Node& n, const NodePtr& parent, const std::string& name);
    // Merged listing of a directory (no ".", ".."); stops early after `limit` entries.
    int list_dir(Node& dir, std::vector<DirEntry>& out, size_t limit = SIZE_MAX);
    int open_parent(Node& n, int branch, UniqueFd& fd, std::string& name);

    // ---- the writable branch (engine_copyup.cpp)
    void init_rw_branch();
    int ensure_upper_dir(Node& dir);
    int copy_up(Node& n);
    int copy_up_tree(const NodePtr& dir);
    // After copy_up_tree: the copied directory is made opaque and loses the markers below it.
    void tidy_copied(int dirfd);
    void make_whiteout(int dirfd, const std::string& name);
    void remove_whiteout(int dirfd, const std::string& name);
    bool has_whiteout(int dirfd, const std::string& name) const;
    void make_opaque(int dirfd);
    // Deletes the aufs markers (whiteouts, opaque marker) of an upper directory; false when it
    // also holds something else.
    bool clear_markers(int dirfd);
    void add_pseudo_link(Node& n, int upper_dirfd, const std::string& name);
    void drop_pseudo_link(uint64_t ino);
    void link_other_names(Node& n, int branch, const struct stat& lower, int upper_dirfd,
                          const std::string& name);
    const std::unordered_map<ino_t, std::vector<std::string>>& link_index(int branch);
    void after_unlink(Node* n, const struct stat& before);
    std::string temp_name();
    bool name_ok(const std::string& name, int& err) const;

    // ---- creating entries (engine_names.cpp)
    template <class MakeFn>
    int make_entry(uint64_t parent, const std::string& name, const Caller& c, mode_t umask,
                   bool is_dir, MakeFn make, Entry& out);
    int open_node(const NodePtr& n, int flags, bool created, UniqueFd* fd_in, OpenResult& out);
    int setattr_real(Node& n, const SetattrArgs& a);

    BranchStack br_;
    mutable std::mutex mu_;
    NodePtr root_;
    std::unordered_map<uint64_t, NodePtr> nodes_;           // by FUSE node id
    std::unordered_map<uint64_t, std::weak_ptr<Node>> by_ino_;  // the current node of an ino
    Xino xino_;
    uint64_t gen_ = 1;
    uint64_t changes_ = 0;  // bumped by everything that changes names or copies up

    // the writable branch's bookkeeping
    UniqueFd plnk_, orph_;
    bool base_ok_ = false;
    std::unordered_map<uint64_t, std::string> plinks_;  // union ino -> name in .wh..wh.plnk
    // per lower branch: ino -> paths of its hardlinked files, built on first need
    std::unordered_map<int, std::unordered_map<ino_t, std::vector<std::string>>> link_index_;
    uint64_t temp_counter_ = 0;

    BackingOps* backing_ = nullptr;
    bool passthrough_ = false;
};

}  // namespace sk::unionfs
