// The union filesystem: aufs branch semantics over a BranchStack, one operation per FUSE
// request. Names are looked up top-down honouring ".wh.<name>" and ".wh..wh..opq"; anything
// that changes an entry of a read-only branch first copies it (and its parent directories) up
// to the writable branch; deletions of lower entries leave whiteouts there. The writable
// branch stays in the aufs on-disk format, with aufs's bookkeeping at its top:
// ".wh..wh.aufs" (the file whiteouts are hard links of), ".wh..wh.plnk" (pseudo-links of
// hardlinked files copied up) and ".wh..wh.orph" (where copies are made before they appear).
//
// Branches change only through the union while it is mounted (aufs's udba=none): nobody may
// add, remove or modify entries of any branch behind the engine's back. The engine relies on
// it: each directory's read-only branches are indexed once (dir_index.hpp), directories of
// the writable branch stay open, and the kernel may cache entries, negative ones included.
// Changes made behind its back show late or never, and may confuse the engine.
//
// Errors, one convention for the operations and every helper they call: a function that can
// fail returns an int, 0 or the positive errno value the request fails with, and hands its
// results (descriptors, byte counts, attributes) back through out-parameters; a function
// that cannot fail, or whose failure changes nothing (bookkeeping on a best-effort basis),
// returns void. Nothing leaves by errno or by a negative count. The shared code the engine
// calls into (copy-up, tree removal) throws SysError; with_errno() turns that into the
// errno where it is called. Only building the engine (its branches, its bookkeeping
// directories) throws (SysError); std::bad_alloc may come from anywhere.
//
// One mutex serialises everything that touches names; reads and writes of open files do not
// take it.
#pragma once

#include <sys/stat.h>
#include <sys/statfs.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/syserror.hpp"
#include "copyup/copy_data.hpp"
#include "union/branches.hpp"
#include "union/node.hpp"
#include "union/xino.hpp"

namespace sk::union_fs {

struct Caller {
    uid_t uid = 0;
    gid_t gid = 0;
};

// How long the kernel may cache entries, negative ones and attributes (seconds).
inline constexpr double kCacheTimeout = 3600.0;

struct Entry {
    uint64_t id = 0;  // 0: the name does not exist (a negative entry)
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

// A directory of some branch to use with *at() calls: a descriptor the engine keeps (valid
// while this lives) or one opened for the occasion.
struct DirRef {
    int fd = -1;
    UniqueFd owned;
    std::shared_ptr<DirIndex> hold;

    int get() const { return fd; }
    explicit operator bool() const { return fd >= 0; }
};

// How the kernel gets a backing file for passthrough: the session owns /dev/fuse.
struct BackingOps {
    virtual ~BackingOps() = default;
    // Registers fd as a backing file: 0 and its id (> 0), or an errno value.
    virtual int open_backing(int fd, int& id) = 0;
    virtual void close_backing(int id) = 0;
};

// Runs fn, code shared with other areas that reports failures as SysError, and returns 0 or
// the errno it failed with.
template <class Fn>
int with_errno(Fn&& fn) {
    try {
        fn();
        return 0;
    } catch (const SysError& e) {
        return e.err ? e.err : EIO;
    }
}

// What the directory indexes of the read-only branches may hold at once (dir_index.hpp):
// descriptors, and names (about 100 bytes each).
struct IndexLimits {
    size_t fds = 16384;
    size_t names = size_t{1} << 19;
};

// Told before the engine waits on its lock or starts something long (copying a big file, a
// tree, syncing): the session lets another thread serve requests meanwhile.
struct BlockingNotice {
    virtual ~BlockingNotice() = default;
    virtual void blocking() = 0;
};

class Engine {
public:
    explicit Engine(BranchStack branches, IndexLimits limits = {});
    ~Engine();

    // Called once the kernel answered INIT.
    void enable_passthrough(BackingOps* ops) {
        backing_ = ops;
        passthrough_ = ops != nullptr;
    }
    bool passthrough() const { return passthrough_; }
    void set_blocking_notice(BlockingNotice* b) { blocking_ = b; }

    // Removes the bookkeeping that only lives as long as the mount (pseudo-links, half-made
    // copies). Called when the mount is gone.
    void shutdown();

    mode_t root_mode() const;
    const BranchStack& branches() const { return br_; }

    // A missing name gives a negative entry (id 0) the kernel may cache, not ENOENT.
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
    // Data through the daemon (no passthrough); done: the bytes transferred.
    int read(FileHandle* fh, char* buf, size_t size, off_t off, size_t& done);
    int write(FileHandle* fh, const char* buf, size_t size, off_t off, size_t& done);
    int fsync(FileHandle* fh, bool datasync);
    int fallocate(FileHandle* fh, int mode, off_t off, off_t len);
    int lseek(FileHandle* fh, off_t off, int whence, off_t& out);
    int copy_file_range(FileHandle* in, off_t off_in, FileHandle* out, off_t off_out, size_t len,
                        unsigned flags, size_t& done);

    int opendir(uint64_t id, DirHandle*& out);
    // Lookups of entries [from, from + count) of a listing, for READDIRPLUS: out[i].id stays
    // 0 for an entry the kernel must look up itself (directories, ".", "..", anything changed
    // since the listing). Every entry with an id counts as one lookup.
    void plus_entries(DirHandle* dh, size_t from, size_t count, std::vector<Entry>& out);
    // A listing read from its start again (rewinddir) shows what changed since it was made,
    // as POSIX wants and overlay does.
    void rewind(DirHandle* dh);
    void releasedir(DirHandle* dh);
    int fsyncdir(uint64_t id, bool datasync);
    int syncfs();

    // len: the value's length; value is filled when size > 0 (ERANGE when it is too small).
    int getxattr(uint64_t id, const std::string& name, size_t size, std::string& value,
                 size_t& len);
    int listxattr(uint64_t id, size_t size, std::string& value, size_t& len);
    int setxattr(uint64_t id, const std::string& name, const std::string& value, int flags);
    int removexattr(uint64_t id, const std::string& name);

private:
    // ---- where things are (engine_core.cpp)
    struct Found {
        bool found = false;
        int branch = -1;
        struct stat st {};
        std::vector<int> layers;  // when a directory
        bool upper_whiteout = false;  // a whiteout of the name in the writable branch
    };
    NodePtr node(uint64_t id);  // nullptr when unknown
    // The node the kernel knows by id, brought up to date (refresh).
    int live_node(uint64_t id, NodePtr& out);
    // live_node, and where its entry is: the directory holding it in its branch, and its
    // name there.
    int live_entry(uint64_t id, NodePtr& out, DirRef& dir, std::string& name);
    NodePtr root() const { return root_; }
    // The path of a node's entry relative to a branch root; nullopt when it has no name.
    std::optional<std::string> rel_path(const Node& n) const;
    // Brings branch/layers of n (and its ancestors) up to the current layout.
    int refresh(Node& n);
    int find_entry(Node& parent, const std::string& name, Found& f);
    // The directory in the writable branch (dir.layers[0] == 0): a descriptor kept in the
    // node, valid while the node keeps it.
    int upper_fd(Node& dir, int& fd);
    // The index of dir's read-only branches; nullptr when it has none.
    std::shared_ptr<DirIndex> lower_index(Node& dir);
    // Where dir.layers' read-only part starts (1 when the first layer is the writable branch).
    size_t lower_start(const Node& dir) const {
        return br_.has_rw() && !dir.layers.empty() && dir.layers[0] == 0 ? 1 : 0;
    }
    // Directory dir in branch b.
    int dir_fd(Node& dir, int b, DirRef& out);
    // Opens directory dir of branch b: from the nearest ancestor whose directory there is
    // open, one name at a time (any depth works; no path is longer than a name).
    int open_dir_in(Node& dir, int b, UniqueFd& out);
    // Drops what a directory node keeps open (it is gone, or the kernel forgot it).
    void drop_dir_state(Node& dir);
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
    int list_dir(Node& dir, std::vector<MergedEntry>& out, size_t limit = SIZE_MAX);
    // Is the directory empty in the union?
    int check_empty(Node& dir);
    // The directory holding n's entry in `branch`, and the entry's name there.
    int open_parent(Node& n, int branch, DirRef& fd, std::string& name);

    // ---- the writable branch (engine_copyup.cpp)
    void init_rw_branch();
    int ensure_upper_dir(Node& dir);
    int copy_up(Node& n);
    // Where a copy-up of n (not the root) goes from and to, once its parent is in the
    // writable branch: the directories holding its entry in its branch and in the writable
    // one, and its name there.
    int copy_ends(Node& n, DirRef& src, DirRef& dst, std::string& name);
    int copy_up_tree(const NodePtr& dir);
    // After copy_up_tree: the copied directory is made opaque and loses the markers below it.
    int tidy_copied(int dirfd);
    int make_whiteout(int dirfd, const std::string& name);
    int remove_whiteout(int dirfd, const std::string& name);
    bool has_whiteout(int dirfd, const std::string& name) const;
    int make_opaque(int dirfd);
    // Deletes the aufs markers (whiteouts, opaque marker) of an upper directory; ENOTEMPTY,
    // deleting nothing, when it also holds something else.
    int clear_markers(int dirfd);
    void add_pseudo_link(Node& n, int upper_dirfd, const std::string& name);
    void drop_pseudo_link(uint64_t ino);
    void link_other_names(Node& n, int branch, const struct stat& lower, int upper_dirfd,
                          const std::string& name);
    const std::unordered_map<ino_t, std::vector<std::string>>& link_index(int branch);
    void after_unlink(Node* n, const struct stat& before);
    std::string temp_name();
    // A name an entry may be given through the union.
    int check_name(const std::string& name) const;

    // ---- creating entries (engine_names.cpp)
    template <class MakeFn>
    int make_entry(uint64_t parent, const std::string& name, const Caller& c, mode_t umask,
                   bool is_dir, MakeFn make, Entry& out);
    // For unlink (dir false) and rmdir (dir true): directory `parent`, up to date, and its
    // entry `name` (ENOENT when the union shows none; EISDIR or ENOTDIR when it is of the
    // other kind).
    int find_to_remove(uint64_t parent, const std::string& name, bool dir, NodePtr& p,
                       Found& f);
    // Before `name` (found as f) leaves directory p: p's directory in the writable branch, and
    // there a whiteout of the name when a branch below holds it.
    int hide_lower(Node& p, const std::string& name, const Found& f, int& upper);
    int open_node(const NodePtr& n, int flags, bool created, UniqueFd* fd_in, OpenResult& out);
    int setattr_real(Node& n, const SetattrArgs& a);

    // ---- extended attributes (engine_xattr.cpp)
    // getxattr and listxattr of node id: read(at, buf) makes the one call (buf null when
    // size is 0).
    template <class Read>
    int read_xattrs(uint64_t id, size_t size, std::string& value, size_t& len, Read read);

    BranchStack br_;
    mutable std::mutex mu_;
    // Before the nodes: indexes leave it as their nodes go.
    IndexCache index_cache_;
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
    std::string temp_prefix_;
    // Per branch: what copies from it to the writable branch found unsupported.
    std::unique_ptr<copyup::FsCaps[]> copy_caps_;

    // The engine's lock; whoever has to wait for it says so first.
    std::unique_lock<std::mutex> lock() const {
        std::unique_lock lk(mu_, std::try_to_lock);
        if (!lk.owns_lock()) {
            may_block();
            lk.lock();
        }
        return lk;
    }
    void may_block() const {
        if (blocking_) blocking_->blocking();
    }

    BlockingNotice* blocking_ = nullptr;
    BackingOps* backing_ = nullptr;
    bool passthrough_ = false;
};

}  // namespace sk::union_fs
