// Open files and directories. A regular file opened for writing (or truncation) is copied up
// first, so an open file never needs a copy-up later. Where the kernel allows it, the file's
// I/O is passed through to the real file (FOPEN_PASSTHROUGH); otherwise it goes through the
// daemon with the kernel's page cache in front.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "union/engine.hpp"
#include "union/fuse_proto.hpp"

namespace sk::union_fs {

int Engine::open(uint64_t id, int flags, OpenResult& out) {
    auto lk = lock();
    NodePtr n;
    if (int e = live_node(id, n)) return e;
    return open_node(n, flags, false, nullptr, out);
}

int Engine::open_node(const NodePtr& n, int flags, bool created, UniqueFd* fd_in,
                      OpenResult& out) {
    int acc = flags & O_ACCMODE;
    bool wants_write = acc != O_RDONLY || (flags & O_TRUNC);
    if (wants_write && !created) {
        if (!br_.has_rw()) return EROFS;
        if (int e = copy_up(*n)) return e;
        n->upper_written = true;
    }
    UniqueFd fd;
    if (fd_in) {
        fd = std::move(*fd_in);
    } else {
        DirRef d;
        std::string name;
        if (int e = open_parent(*n, n->branch, d, name)) return e;
        // O_APPEND and O_DIRECT stay with the kernel's file: the daemon writes at the offsets
        // the kernel computed, from buffers of its own.
        int oflags = acc | (flags & (O_TRUNC | O_NOATIME)) | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY;
        fd.reset(::openat(d.get(), name.c_str(), oflags));
        if (!fd) return errno;
    }
    struct stat st;
    if (::fstat(fd.get(), &st) < 0) return errno;
    if (!S_ISREG(st.st_mode)) return EINVAL;

    auto fh = std::make_unique<FileHandle>();
    fh->node = n;
    fh->flags = flags;
    fh->writable = acc != O_RDONLY;
    fh->on_lower = n->branch != 0;
    fh->moves_seen = n->moves.load();

    if (passthrough_) {
        if (n->pt_count > 0) {
            bool same = n->pt_dev == st.st_dev && n->pt_ino == st.st_ino;
            // A reader may share the lower backing file while the copy's data is unchanged.
            bool lower_ok = !wants_write && !n->upper_written;
            if (!same && !lower_ok) {
                // The kernel keeps one backing file per inode while any passthrough file is
                // open, so this open needs a new inode: the name gets a new node, and ESTALE
                // makes the kernel look the name up again and retry. Files already open keep
                // reading the lower file, as with overlayfs before 4.19.
                if (auto it = by_ino_.find(n->ino); it != by_ino_.end() && it->second.lock() == n)
                    by_ino_.erase(it);
                return ESTALE;
            }
            fh->passthrough = true;
            ++n->pt_count;
            out.backing_id = n->pt_id;
        } else if (n->cached_count == 0) {
            int id = 0;
            int err = backing_->open_backing(fd.get(), id);
            if (err == 0) {
                fh->passthrough = true;
                n->pt_count = 1;
                n->pt_id = id;
                n->pt_dev = st.st_dev;
                n->pt_ino = st.st_ino;
                out.backing_id = id;
            } else if (err == EPERM) {
                passthrough_ = false;  // not allowed at all here: stop asking
            }
        }
    }
    if (fh->passthrough) {
        out.open_flags = fuse::FOPEN_PASSTHROUGH | fuse::FOPEN_NOFLUSH;
    } else {
        ++n->cached_count;
        out.open_flags = fuse::FOPEN_NOFLUSH;
        // Data of a read-only branch cannot change under the page cache.
        if (n->branch != 0) out.open_flags |= fuse::FOPEN_KEEP_CACHE;
    }
    fh->fd.store(fd.get());
    fh->fds.push_back(std::move(fd));
    n->files.push_back(fh.get());
    out.fh = fh.release();
    return 0;
}

void Engine::release(FileHandle* fh) {
    auto lk = lock();
    Node& n = *fh->node;
    if (fh->passthrough) {
        if (--n.pt_count == 0) {
            backing_->close_backing(n.pt_id);
            n.pt_id = 0;
        }
    } else {
        --n.cached_count;
    }
    std::erase(n.files, fh);
    delete fh;
}

// Data transfers bigger than this let another thread read requests meanwhile.
constexpr size_t kLongIo = 64 * 1024;

int Engine::read(FileHandle* fh, char* buf, size_t size, off_t off, size_t& done) {
    if (size > kLongIo) may_block();
    if (fh->on_lower && fh->node->moves.load() != fh->moves_seen) {
        // Copied up since this file was opened: read what the union now shows, as the page
        // cache shared with writers does.
        auto lk = lock();
        Node& n = *fh->node;
        DirRef d;
        std::string name;
        if (refresh(n) == 0 && open_parent(n, n.branch, d, name) == 0) {
            UniqueFd f(::openat(d.get(), name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
            if (f) {
                std::lock_guard fl(fh->fds_mu);
                fh->fd.store(f.get());
                fh->fds.push_back(std::move(f));
                fh->on_lower = n.branch != 0;
            }
        }
        fh->moves_seen = n.moves.load();
    }
    ssize_t r = ::pread(fh->fd.load(), buf, size, off);
    if (r < 0) return errno;
    done = static_cast<size_t>(r);
    return 0;
}

int Engine::write(FileHandle* fh, const char* buf, size_t size, off_t off, size_t& done) {
    if (size > kLongIo) may_block();
    ssize_t r = ::pwrite(fh->fd.load(), buf, size, off);
    if (r < 0) return errno;
    done = static_cast<size_t>(r);
    return 0;
}

int Engine::fsync(FileHandle* fh, bool datasync) {
    may_block();
    int r = datasync ? ::fdatasync(fh->fd.load()) : ::fsync(fh->fd.load());
    return r < 0 ? errno : 0;
}

int Engine::fallocate(FileHandle* fh, int mode, off_t off, off_t len) {
    may_block();
    return ::fallocate(fh->fd.load(), mode, off, len) < 0 ? errno : 0;
}

int Engine::lseek(FileHandle* fh, off_t off, int whence, off_t& out) {
    off_t r = ::lseek(fh->fd.load(), off, whence);
    if (r < 0) return errno;
    out = r;
    return 0;
}

int Engine::copy_file_range(FileHandle* in, off_t off_in, FileHandle* out, off_t off_out,
                            size_t len, unsigned flags, size_t& done) {
    may_block();
    loff_t oi = off_in, oo = off_out;
    ssize_t r = ::copy_file_range(in->fd.load(), &oi, out->fd.load(), &oo, len, flags);
    if (r < 0) return errno;
    done = static_cast<size_t>(r);
    return 0;
}

int Engine::opendir(uint64_t id, DirHandle*& out) {
    auto lk = lock();
    NodePtr n;
    if (int e = live_node(id, n)) return e;
    if (!n->is_dir()) return ENOTDIR;
    auto dh = std::make_unique<DirHandle>();
    dh->node = n;
    uint64_t parent_ino = 1;
    if (!n->names.empty()) parent_ino = n->names.back().parent->ino;
    dh->entries.push_back({".", n->ino, DT_DIR, -1});
    dh->entries.push_back({"..", parent_ino, DT_DIR, -1});
    if (int e = list_dir(*n, dh->entries)) return e;
    dh->changes = changes_;
    out = dh.release();
    return 0;
}

void Engine::rewind(DirHandle* dh) {
    auto lk = lock();
    if (dh->changes == changes_) return;
    // Gone or unreadable now: the old listing stays, as a removed directory's does.
    if (refresh(*dh->node)) return;
    std::vector<MergedEntry> entries(dh->entries.begin(), dh->entries.begin() + 2);  // ".", ".."
    if (list_dir(*dh->node, entries)) return;
    dh->entries = std::move(entries);
    dh->changes = changes_;
}

void Engine::plus_entries(DirHandle* dh, size_t from, size_t count, std::vector<Entry>& out) {
    out.assign(count, Entry{});
    auto lk = lock();
    // The listing says in which branch each entry is topmost. That is what a lookup would
    // find for a non-directory, as long as nothing changed since; a directory's lookup needs
    // every branch, so the kernel asks for those itself.
    if (dh->changes != changes_ || refresh(*dh->node)) return;
    std::unordered_map<int, DirRef> dirs;
    for (size_t i = 0; i < count && from + i < dh->entries.size(); ++i) {
        const MergedEntry& de = dh->entries[from + i];
        if (de.branch < 0 || de.type == DT_DIR || de.type == DT_UNKNOWN) continue;
        if (auto known = by_ino_.find(de.ino); known != by_ino_.end()) {
            NodePtr n = known->second.lock();
            if (n && n->nlookup > 0) continue;  // the kernel has it already
        }
        auto [it, fresh] = dirs.try_emplace(de.branch);
        if (fresh) dir_fd(*dh->node, de.branch, it->second);
        if (!it->second) continue;
        Found f;
        if (::fstatat(it->second.get(), de.name.c_str(), &f.st, AT_SYMLINK_NOFOLLOW) < 0 ||
            S_ISDIR(f.st.st_mode))
            continue;
        if (S_ISREG(f.st.st_mode) && de.branch != 0 && f.st.st_nlink > 1) {
            uint64_t ino = xino_.find(f.st.st_dev, f.st.st_ino);
            if (ino && plinks_.count(ino)) continue;  // lookup gives it the upper copy
        }
        f.found = true;
        f.branch = de.branch;
        NodePtr n = node_for(dh->node, de.name, f, true);
        fill_entry(*n, f.st, out[i]);
    }
}

void Engine::releasedir(DirHandle* dh) {
    auto lk = lock();
    delete dh;
}

int Engine::fsyncdir(uint64_t id, bool datasync) {
    auto lk = lock();
    NodePtr n = node(id);
    if (!n) return ENOENT;
    if (!br_.has_rw() || refresh(*n) || n->layers.empty() || n->layers[0] != 0) return 0;
    int d;
    if (upper_fd(*n, d)) return 0;  // nothing of it in the writable branch to sync
    may_block();
    int r = datasync ? ::fdatasync(d) : ::fsync(d);
    return r < 0 ? errno : 0;
}

int Engine::syncfs() {
    may_block();
    return ::syncfs(br_[0].root.get()) < 0 ? errno : 0;
}

}  // namespace sk::union_fs
