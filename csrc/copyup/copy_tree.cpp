// Copying a whole tree with a small pool of threads.
//
// Work is split into tasks: "copy subdirectory X of D and list it" and "copy these (at most
// kChunk) non-directory entries of D". Tasks go on one LIFO stack, which keeps the walk close
// to depth-first and so the number of directories held open small. Each directory counts the
// tasks still working inside it; the last one to finish sets the directory's xattrs, mode and
// times (after its contents, so nothing bumps its mtime again) and then tells its parent.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/dir_entries.hpp"
#include "common/inode_key.hpp"
#include "copyup/copy.hpp"
#include "copyup/copy_node.hpp"
#include "copyup/node_error.hpp"

namespace sk::copyup {
namespace {

constexpr size_t kChunk = 32;

struct DirJob {
    std::list<DirJob>::iterator self;  // in TreeCopy::jobs_, to drop it once finished
    DirJob* parent;
    std::string rel;  // below the tree root: "" for the root itself, else "a/b"
    UniqueFd src;
    UniqueFd dst;
    struct stat st;
    std::atomic<long> pending{1};  // its own listing plus every task still working inside
};

struct Task {
    DirJob* dir = nullptr;
    std::string subdir;             // set: copy this subdirectory of dir, then list it
    std::vector<DirEntry> entries;  // otherwise: copy these non-directories of dir
};

// The first copy of an inode with several names; the other names become links to it.
struct LinkTarget {
    bool done = false;
    bool failed = false;
    std::string dst_rel;
};

// Thrown by a task that cannot go on because another one failed (its error is the one kept).
struct Aborted {};

std::string join(const std::string& rel, const std::string& name) {
    return rel.empty() ? name : rel + "/" + name;
}

unsigned char type_of(mode_t mode) {
    switch (mode & S_IFMT) {
        case S_IFDIR: return DT_DIR;
        case S_IFREG: return DT_REG;
        case S_IFLNK: return DT_LNK;
        default: return DT_UNKNOWN;
    }
}

class TreeCopy {
public:
    TreeCopy(std::string src_root, std::string dst_root, bool reflink)
        : src_root_(std::move(src_root)), dst_root_(std::move(dst_root)), reflink_(reflink) {}

    CopyStats run(int src_dirfd, const char* src_name, int dst_dirfd, const char* dst_name,
                  unsigned threads);

private:
    void worker(CopyStats& stats);
    void run_task(Task& t, const NodeCtx& ctx, CopyStats& stats);
    void list_dir(DirJob* d);
    void copy_subdir(DirJob* parent, const std::string& name, const NodeCtx& ctx, CopyStats& stats);
    void copy_leaf(DirJob* d, const DirEntry& e, const NodeCtx& ctx, CopyStats& stats);
    bool link_if_copied(const struct stat& st, DirJob* d, const std::string& name);
    void publish_link(const struct stat& st, std::string dst_rel, bool ok);
    void done(DirJob* d);
    void push(std::vector<Task>& tasks);
    DirJob* new_job(DirJob* parent, std::string rel, UniqueFd src, UniqueFd dst,
                    const struct stat& st);

    std::string src_path(const std::string& rel) const {
        return rel.empty() ? src_root_ : src_root_ + "/" + rel;
    }
    std::string dst_path(const std::string& rel) const {
        return rel.empty() ? dst_root_ : dst_root_ + "/" + rel;
    }
    SysError error_at(const NodeError& e, const std::string& rel) const {
        return to_sys_error(e, src_path(rel), dst_path(rel));
    }

    const std::string src_root_, dst_root_;
    const bool reflink_;
    FsCaps caps_;
    const std::optional<CreateDefaults> defaults_ = create_defaults();
    DirJob* root_ = nullptr;
    InodeKey dst_root_id_{};

    std::mutex mu_;  // guards everything below up to links_
    std::condition_variable cv_;
    std::vector<Task> stack_;
    std::list<DirJob> jobs_;  // directories not finished yet
    bool finished_ = false;
    bool aborted_ = false;
    std::exception_ptr error_;

    std::mutex link_mu_;
    std::condition_variable link_cv_;
    std::unordered_map<InodeKey, LinkTarget, InodeKeyHash> links_;
};

DirJob* TreeCopy::new_job(DirJob* parent, std::string rel, UniqueFd src, UniqueFd dst,
                          const struct stat& st) {
    std::lock_guard lk(mu_);
    DirJob& job = jobs_.emplace_back();
    job.self = std::prev(jobs_.end());
    job.parent = parent;
    job.rel = std::move(rel);
    job.src = std::move(src);
    job.dst = std::move(dst);
    job.st = st;
    return &job;
}

void TreeCopy::push(std::vector<Task>& tasks) {
    if (tasks.empty()) return;
    {
        std::lock_guard lk(mu_);
        // Reversed, so that popping from the back takes them in listing order.
        for (auto it = tasks.rbegin(); it != tasks.rend(); ++it) stack_.push_back(std::move(*it));
    }
    if (tasks.size() > 1)
        cv_.notify_all();
    else
        cv_.notify_one();
}

void TreeCopy::done(DirJob* d) {
    while (d && d->pending.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        try {
            finish_dir(d->src.get(), d->st, d->dst.get());
        } catch (const NodeError& e) {
            throw error_at(e, d->rel);
        }
        DirJob* parent = d->parent;
        if (parent) {  // the root's fds serve hardlinks until the very end
            std::lock_guard lk(mu_);
            jobs_.erase(d->self);
        } else {
            std::lock_guard lk(mu_);
            finished_ = true;
            cv_.notify_all();
        }
        d = parent;
    }
}

void TreeCopy::list_dir(DirJob* d) {
    std::vector<DirEntry> entries;
    if (int err = read_dir(d->src.get(), entries)) throw SysError(err, src_path(d->rel));
    sort_by_inode(entries);

    std::vector<Task> tasks;
    Task leaves{d, {}, {}};
    for (DirEntry& e : entries) {
        if (e.type == DT_UNKNOWN) {
            struct stat st;
            if (::fstatat(d->src.get(), e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0)
                throw SysError(errno, src_path(join(d->rel, e.name)));
            e.type = type_of(st.st_mode);
        }
        if (e.type == DT_DIR) {
            tasks.push_back(Task{d, std::move(e.name), {}});
            continue;
        }
        leaves.entries.push_back(std::move(e));
        if (leaves.entries.size() == kChunk) {
            tasks.push_back(std::move(leaves));
            leaves = Task{d, {}, {}};
        }
    }
    if (!leaves.entries.empty()) tasks.push_back(std::move(leaves));
    d->pending.fetch_add(static_cast<long>(tasks.size()), std::memory_order_relaxed);
    push(tasks);
    done(d);  // the listing itself
}

void TreeCopy::copy_subdir(DirJob* parent, const std::string& name, const NodeCtx& ctx,
                           CopyStats& stats) {
    std::string rel = join(parent->rel, name);
    DirJob* d;
    bool mount_root;
    try {
        UniqueFd src = open_src_dir(parent->src.get(), name.c_str());
        if (!src) fail(Side::src);
        DirStat ds = stat_dir(src.get());
        if (ds.st.st_dev == dst_root_id_.dev && ds.st.st_ino == dst_root_id_.ino) {
            // The copy itself, made inside the tree it copies: not copied into itself.
            done(parent);
            return;
        }
        UniqueFd dst = make_dir(ds.st, parent->dst.get(), name.c_str(), ctx);
        mount_root = ds.mount_root;
        d = new_job(parent, rel, std::move(src), std::move(dst), ds.st);
    } catch (const NodeError& e) {
        throw error_at(e, rel);
    }
    ++stats.dirs;
    if (mount_root)
        done(d);  // another filesystem: its contents are not ours to copy
    else
        list_dir(d);
}

bool TreeCopy::link_if_copied(const struct stat& st, DirJob* d, const std::string& name) {
    std::unique_lock lk(link_mu_);
    auto [it, inserted] = links_.try_emplace(inode_key(st));
    if (inserted) return false;  // the caller copies it and publishes the copy
    LinkTarget& target = it->second;  // references survive rehashing, iterators do not
    link_cv_.wait(lk, [&] { return target.done || target.failed; });
    if (target.failed) throw Aborted{};
    std::string dst_rel = target.dst_rel;
    lk.unlock();
    if (::linkat(root_->dst.get(), dst_rel.c_str(), d->dst.get(), name.c_str(), 0) < 0)
        fail(Side::dst);
    return true;
}

void TreeCopy::publish_link(const struct stat& st, std::string dst_rel, bool ok) {
    {
        std::lock_guard lk(link_mu_);
        LinkTarget& target = links_[inode_key(st)];
        target.dst_rel = std::move(dst_rel);
        (ok ? target.done : target.failed) = true;
    }
    link_cv_.notify_all();
}

void TreeCopy::copy_leaf(DirJob* d, const DirEntry& e, const NodeCtx& ctx, CopyStats& stats) {
    const char* name = e.name.c_str();
    struct stat st;
    UniqueFd src;
    if (e.type == DT_REG) {
        src = open_src_file(d->src.get(), name);
        if (!src || ::fstat(src.get(), &st) < 0) fail(Side::src);
    } else if (::fstatat(d->src.get(), name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        fail(Side::src);
    }
    if (S_ISDIR(st.st_mode)) fail(Side::src, EAGAIN);  // replaced by a directory meanwhile
    if (S_ISREG(st.st_mode) && !src) {
        src = open_src_file(d->src.get(), name);
        if (!src || ::fstat(src.get(), &st) < 0) fail(Side::src);
    }

    const bool shared = st.st_nlink > 1;
    if (shared && link_if_copied(st, d, e.name)) {
        ++stats.hardlinks;
        return;
    }
    try {
        switch (st.st_mode & S_IFMT) {
            case S_IFREG: {
                DataMethod m = copy_regular(src.get(), st, d->dst.get(), name, ctx);
                ++stats.files;
                stats.bytes += static_cast<uint64_t>(st.st_size);
                if (m == DataMethod::reflink) ++stats.reflinked;
                break;
            }
            case S_IFLNK:
                copy_symlink(d->src.get(), name, st, d->dst.get(), name, ctx);
                ++stats.symlinks;
                break;
            default:
                copy_special(d->src.get(), name, st, d->dst.get(), name, ctx);
                ++stats.specials;
                break;
        }
    } catch (...) {
        if (shared) publish_link(st, {}, false);
        throw;
    }
    if (shared) publish_link(st, join(d->rel, e.name), true);
}

void TreeCopy::run_task(Task& t, const NodeCtx& ctx, CopyStats& stats) {
    if (!t.subdir.empty()) {
        copy_subdir(t.dir, t.subdir, ctx, stats);
        return;
    }
    for (const DirEntry& e : t.entries) {
        try {
            copy_leaf(t.dir, e, ctx, stats);
        } catch (const NodeError& err) {
            throw error_at(err, join(t.dir->rel, e.name));
        }
    }
    done(t.dir);
}

void TreeCopy::worker(CopyStats& stats) {
    std::vector<char> buf;
    const NodeCtx ctx{reflink_, &caps_, &buf, false, defaults_ ? &*defaults_ : nullptr};
    for (;;) {
        Task t;
        {
            std::unique_lock lk(mu_);
            cv_.wait(lk, [&] { return finished_ || aborted_ || !stack_.empty(); });
            if (finished_ || aborted_) return;
            t = std::move(stack_.back());
            stack_.pop_back();
        }
        try {
            run_task(t, ctx, stats);
        } catch (const Aborted&) {
        } catch (...) {
            std::lock_guard lk(mu_);
            if (!error_) error_ = std::current_exception();
            aborted_ = true;
            cv_.notify_all();
        }
    }
}

CopyStats TreeCopy::run(int src_dirfd, const char* src_name, int dst_dirfd, const char* dst_name,
                        unsigned threads) {
    CopyStats total;
    std::vector<char> buf;
    const NodeCtx root_ctx{reflink_, &caps_, &buf, /*strip_inherited=*/true};
    try {
        UniqueFd src = open_src_dir(src_dirfd, src_name);
        if (!src) fail(Side::src);
        DirStat ds = stat_dir(src.get());
        UniqueFd dst = make_dir(ds.st, dst_dirfd, dst_name, root_ctx);
        struct stat dst_st;
        if (::fstat(dst.get(), &dst_st) < 0) fail(Side::dst);
        dst_root_id_ = inode_key(dst_st);
        root_ = new_job(nullptr, {}, std::move(src), std::move(dst), ds.st);
    } catch (const NodeError& e) {
        throw error_at(e, {});
    }
    ++total.dirs;
    list_dir(root_);

    if (threads == 0) threads = std::clamp(std::thread::hardware_concurrency(), 1u, 2u);
    std::vector<CopyStats> stats(threads);
    std::vector<std::thread> pool;
    try {
        for (unsigned i = 1; i < threads; ++i)
            pool.emplace_back([this, &stats, i] { worker(stats[i]); });
    } catch (const std::system_error&) {
        // No thread to be had: the calling thread does all the work.
    }
    worker(stats[0]);
    for (auto& th : pool) th.join();
    if (error_) std::rethrow_exception(error_);
    for (const CopyStats& s : stats) total += s;
    return total;
}

}  // namespace

CopyStats copy_tree_at(int src_dirfd, const char* src_name, int dst_dirfd, const char* dst_name,
                       bool reflink, unsigned threads) {
    TreeCopy copy(src_name, dst_name, reflink);
    return copy.run(src_dirfd, src_name, dst_dirfd, dst_name, threads);
}

}  // namespace sk::copyup
