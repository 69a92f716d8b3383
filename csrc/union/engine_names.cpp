// Operations on names: lookup, attributes, creating, deleting, renaming and linking entries.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

#include "common/syserror.hpp"
#include "union/engine.hpp"
#include "union/fuse_proto.hpp"
#include "whiteout/whiteout.hpp"

namespace sk::union_fs {

int Engine::lookup(uint64_t parent, const std::string& name, Entry& out) {
    auto lk = lock();
    auto missing = [&] {
        out = Entry{};
        out.entry_timeout = kCacheTimeout;
        return 0;
    };
    if (name.starts_with(whiteout::kPrefix)) return missing();  // never visible
    // Longer names than kMaxNameLen cannot be made through the union, but a layer may hold
    // them: they are found. A missing one is ENAMETOOLONG, not a negative entry.
    NodePtr p = node(parent);
    if (!p) return ENOENT;
    if (int e = refresh(*p)) return e;
    Found f;
    if (int e = find_entry(*p, name, f)) return e;
    // A name the union could never have made: too long, as overlay says at its own limit
    // (the length is checked only once the name is known to be missing).
    if (!f.found) return name.size() > kMaxNameLen ? ENAMETOOLONG : missing();
    if (S_ISREG(f.st.st_mode) && f.branch != 0 && f.st.st_nlink > 1 && br_.has_rw()) {
        // Another name of a hardlinked file that was copied up: give it the copy.
        uint64_t ino = xino_.find(f.st.st_dev, f.st.st_ino);
        auto pl = ino ? plinks_.find(ino) : plinks_.end();
        int d;
        if (pl != plinks_.end() && ensure_upper_dir(*p) == 0 && upper_fd(*p, d) == 0) {
            if (::linkat(plnk_.get(), pl->second.c_str(), d, name.c_str(), 0) == 0) {
                f = Found{};
                if (int e = find_entry(*p, name, f)) return e;
                if (!f.found) return ENOENT;
            }
        }
    }
    NodePtr n = node_for(p, name, f, true);
    fill_entry(*n, f.st, out);
    return 0;
}

int Engine::getattr(uint64_t id, FileHandle* fh, AttrResult& out) {
    auto lk = lock();
    NodePtr n = fh ? fh->node : node(id);
    if (!n) return ENOENT;
    struct stat st;
    if (n->removed && fh) {
        if (::fstat(fh->fd.load(), &st) < 0) return errno;
    } else if (int e = stat_node(*n, st)) {
        return e;
    }
    out.st = st;
    adjust_stat(*n, out.st);
    out.timeout = attr_timeout(*n);
    return 0;
}

int Engine::setattr_real(Node& n, const SetattrArgs& a) {
    DirRef d;
    std::string name;
    if (int e = open_parent(n, 0, d, name)) return e;
    using namespace sk::fuse;
    if (a.valid & (FATTR_UID | FATTR_GID)) {
        uid_t uid = (a.valid & FATTR_UID) ? a.uid : static_cast<uid_t>(-1);
        gid_t gid = (a.valid & FATTR_GID) ? a.gid : static_cast<gid_t>(-1);
        if (::fchownat(d.get(), name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) < 0) return errno;
    }
    if (a.valid & FATTR_MODE) {
        if (::fchmodat(d.get(), name.c_str(), a.mode & 07777, 0) < 0) return errno;
    }
    if (a.valid & FATTR_SIZE) {
        int r;
        if (a.fh && a.fh->writable && !a.fh->on_lower) {
            r = ::ftruncate(a.fh->fd.load(), a.size);
        } else {
            UniqueFd f(::openat(d.get(), name.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
            if (!f) return errno;
            r = ::ftruncate(f.get(), a.size);
        }
        if (r < 0) return errno;
    }
    if (a.valid & (FATTR_ATIME | FATTR_MTIME | FATTR_ATIME_NOW | FATTR_MTIME_NOW)) {
        struct timespec ts[2];
        ts[0] = (a.valid & FATTR_ATIME_NOW) ? timespec{0, UTIME_NOW}
                : (a.valid & FATTR_ATIME)   ? a.atime
                                            : timespec{0, UTIME_OMIT};
        ts[1] = (a.valid & FATTR_MTIME_NOW) ? timespec{0, UTIME_NOW}
                : (a.valid & FATTR_MTIME)   ? a.mtime
                                            : timespec{0, UTIME_OMIT};
        if (::utimensat(d.get(), name.c_str(), ts, AT_SYMLINK_NOFOLLOW) < 0) return errno;
    }
    return 0;
}

int Engine::setattr(uint64_t id, const SetattrArgs& a, AttrResult& out) {
    auto lk = lock();
    NodePtr n = a.fh ? a.fh->node : node(id);
    if (!n) return ENOENT;
    using namespace sk::fuse;
    const uint32_t changes = FATTR_MODE | FATTR_UID | FATTR_GID | FATTR_SIZE | FATTR_ATIME |
                             FATTR_MTIME | FATTR_ATIME_NOW | FATTR_MTIME_NOW;
    if (a.valid & changes) {
        if (n->removed && a.fh) {
            // A deleted file still open: only its own descriptor reaches it.
            if ((a.valid & FATTR_SIZE) && a.fh->writable &&
                ::ftruncate(a.fh->fd.load(), a.size) < 0)
                return errno;
        } else {
            if (int e = copy_up(*n)) return e;
            if (a.valid & FATTR_SIZE) n->upper_written = true;
            if (int e = setattr_real(*n, a)) return e;
        }
    }
    struct stat st;
    if (n->removed && a.fh) {
        if (::fstat(a.fh->fd.load(), &st) < 0) return errno;
    } else if (int e = stat_node(*n, st)) {
        return e;
    }
    out.st = st;
    adjust_stat(*n, out.st);
    out.timeout = attr_timeout(*n);
    return 0;
}

int Engine::readlink(uint64_t id, std::string& out) {
    auto lk = lock();
    NodePtr n;
    DirRef d;
    std::string name;
    if (int e = live_entry(id, n, d, name)) return e;
    char buf[PATH_MAX];
    ssize_t len = ::readlinkat(d.get(), name.c_str(), buf, sizeof buf);
    if (len < 0) return errno;
    out.assign(buf, static_cast<size_t>(len));
    return 0;
}

// Creates an entry in the writable branch with make(dirfd, name) and gives it the caller's
// ownership. Over a whiteout of the writable branch, a directory becomes opaque (it must not
// show what the whiteout hid) and the whiteout goes.
template <class MakeFn>
int Engine::make_entry(uint64_t parent, const std::string& name, const Caller& c, mode_t umask,
                       bool is_dir, MakeFn make, Entry& out) {
    ++changes_;
    if (!br_.has_rw()) return EROFS;
    if (int e = check_name(name)) return e;
    NodePtr p = node(parent);
    if (!p) return ENOENT;
    if (int e = refresh(*p)) return e;
    Found f;
    if (int e = find_entry(*p, name, f)) return e;
    if (f.found) return EEXIST;
    // The upper directory did not exist before ensure_upper_dir made it without whiteouts.
    bool over_whiteout = f.upper_whiteout;
    if (int e = ensure_upper_dir(*p)) return e;
    int d;
    if (int e = upper_fd(*p, d)) return e;
    // The thread has its own fs context (unshare(CLONE_FS)): the umask is the caller's, and the
    // branch's filesystem applies it or a default ACL, as it would for the caller.
    mode_t old = ::umask(umask);
    int e = make(d, name.c_str());
    ::umask(old);
    if (e) return e;
    struct stat st;
    if (::fstatat(d, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) return errno;
    bool changed = false;
    gid_t gid = c.gid;
    if (st.st_gid != gid) {
        // The filesystem gave it the daemon's group, or the parent's if that is setgid.
        struct stat pst;
        if (::fstat(d, &pst) < 0) return errno;
        if (pst.st_mode & S_ISGID) gid = pst.st_gid;
    }
    if (st.st_uid != c.uid || st.st_gid != gid) {
        if (::fchownat(d, name.c_str(), c.uid, gid, AT_SYMLINK_NOFOLLOW) < 0) return errno;
        struct stat now;
        // chown drops setuid/setgid of a file; the caller created it with them.
        if (!S_ISLNK(st.st_mode) && ::fstatat(d, name.c_str(), &now, AT_SYMLINK_NOFOLLOW) == 0 &&
            now.st_mode != st.st_mode)
            ::fchmodat(d, name.c_str(), st.st_mode & 07777, 0);
        changed = true;
    }
    if (over_whiteout) {
        if (is_dir) {
            UniqueFd nd(::openat(d, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!nd) return errno;
            if (int e = make_opaque(nd.get())) return e;
        }
        if (int e = remove_whiteout(d, name)) return e;
        changed = true;
    }
    if (changed && ::fstatat(d, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) return errno;
    // A new inode: its stable number, unless a file that had the same real inode before is
    // still known by it (open after its deletion), never to be confused with this one.
    uint64_t ino = xino_.stable(st.st_dev, st.st_ino);
    if (auto it = ino ? by_ino_.find(ino) : by_ino_.end(); it != by_ino_.end() && !it->second.expired())
        ino = 0;
    if (auto it = ino ? nodes_.find(ino) : nodes_.end(); it != nodes_.end()) ino = 0;
    xino_.set(st.st_dev, st.st_ino, ino ? ino : xino_.fresh());
    Found nf;
    nf.found = true;
    nf.branch = 0;
    nf.st = st;
    if (is_dir) nf.layers = {0};
    NodePtr n = node_for(p, name, nf, true);
    fill_entry(*n, st, out);
    return 0;
}

int Engine::mknod(uint64_t parent, const std::string& name, mode_t mode, dev_t rdev,
                  mode_t umask, const Caller& c, Entry& out) {
    auto lk = lock();
    auto make = [&](int d, const char* nm) { return ::mknodat(d, nm, mode, rdev) < 0 ? errno : 0; };
    return make_entry(parent, name, c, umask, false, make, out);
}

int Engine::mkdir(uint64_t parent, const std::string& name, mode_t mode, mode_t umask,
                  const Caller& c, Entry& out) {
    auto lk = lock();
    auto make = [&](int d, const char* nm) { return ::mkdirat(d, nm, mode) < 0 ? errno : 0; };
    return make_entry(parent, name, c, umask, true, make, out);
}

int Engine::symlink(uint64_t parent, const std::string& name, const std::string& target,
                    const Caller& c, Entry& out) {
    auto lk = lock();
    auto make = [&](int d, const char* nm) {
        return ::symlinkat(target.c_str(), d, nm) < 0 ? errno : 0;
    };
    return make_entry(parent, name, c, 0, false, make, out);
}

int Engine::create(uint64_t parent, const std::string& name, int flags, mode_t mode,
                   mode_t umask, const Caller& c, Entry& out, OpenResult& open) {
    auto lk = lock();
    UniqueFd fd;
    auto make = [&](int d, const char* nm) {
        int acc = flags & O_ACCMODE;
        fd.reset(::openat(d, nm, acc | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
        return fd ? 0 : errno;
    };
    if (int e = make_entry(parent, name, c, umask, false, make, out)) return e;
    NodePtr n = node(out.id);
    if (!n) return EIO;
    return open_node(n, flags & ~O_TRUNC, true, &fd, open);
}

int Engine::find_to_remove(uint64_t parent, const std::string& name, bool dir, NodePtr& p,
                           Found& f) {
    ++changes_;
    if (!br_.has_rw()) return EROFS;
    if (name.starts_with(whiteout::kPrefix)) return ENOENT;
    if (int e = live_node(parent, p)) return e;
    if (int e = find_entry(*p, name, f)) return e;
    if (!f.found) return ENOENT;
    if (S_ISDIR(f.st.st_mode) != dir) return dir ? ENOTDIR : EISDIR;
    return 0;
}

int Engine::hide_lower(Node& p, const std::string& name, const Found& f, int& upper) {
    if (int e = ensure_upper_dir(p)) return e;
    if (int e = upper_fd(p, upper)) return e;
    // The whiteout goes first: the upper entry still shows until it is gone itself.
    if (f.branch != 0 || lower_has(p, name)) return make_whiteout(upper, name);
    return 0;
}

int Engine::unlink(uint64_t parent, const std::string& name) {
    auto lk = lock();
    NodePtr p;
    Found f;
    if (int e = find_to_remove(parent, name, false, p, f)) return e;
    NodePtr n;
    if (auto it = by_ino_.find(ino_of(f.branch, f.st)); it != by_ino_.end()) n = it->second.lock();
    int d;
    if (int e = hide_lower(*p, name, f, d)) return e;
    if (f.branch == 0) {
        if (::unlinkat(d, name.c_str(), 0) < 0) return errno;
        after_unlink(n.get(), f.st);
    }
    if (n) drop_name(*n, p, name);
    return 0;
}

int Engine::rmdir(uint64_t parent, const std::string& name) {
    auto lk = lock();
    NodePtr p;
    Found f;
    if (int e = find_to_remove(parent, name, true, p, f)) return e;
    NodePtr n = node_for(p, name, f, false);
    if (int e = check_empty(*n)) return e;
    int d;
    if (int e = hide_lower(*p, name, f, d)) return e;
    if (f.branch == 0) {
        UniqueFd cd(::openat(d, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!cd) return errno;
        if (int e = clear_markers(cd.get())) return e;
        if (::unlinkat(d, name.c_str(), AT_REMOVEDIR) < 0) return errno;
        xino_.erase(f.st.st_dev, f.st.st_ino);
    }
    drop_name(*n, p, name);
    drop_dir_state(*n);
    return 0;
}

int Engine::rename(uint64_t parent, const std::string& name, uint64_t newparent,
                   const std::string& newname, unsigned flags) {
    auto lk = lock();
    ++changes_;
    if (!br_.has_rw()) return EROFS;
    // aufs knows no exchange and no whiteout-leaving rename.
    if (flags & ~static_cast<unsigned>(RENAME_NOREPLACE)) return EINVAL;
    if (name.starts_with(whiteout::kPrefix)) return ENOENT;
    if (int e = check_name(newname)) return e;
    NodePtr p = node(parent), q = node(newparent);
    if (!p || !q) return ENOENT;
    if (int e = refresh(*p)) return e;
    if (int e = refresh(*q)) return e;
    Found fs, fd;
    if (int e = find_entry(*p, name, fs)) return e;
    if (!fs.found) return ENOENT;
    if (int e = find_entry(*q, newname, fd)) return e;
    if (fd.found && (flags & RENAME_NOREPLACE)) return EEXIST;
    bool is_dir = S_ISDIR(fs.st.st_mode);
    if (fd.found) {
        if (ino_of(fs.branch, fs.st) == ino_of(fd.branch, fd.st)) return 0;  // same file
        bool dst_dir = S_ISDIR(fd.st.st_mode);
        if (is_dir && !dst_dir) return ENOTDIR;
        if (!is_dir && dst_dir) return EISDIR;
    }
    NodePtr sn = node_for(p, name, fs, false);
    NodePtr dn = fd.found ? node_for(q, newname, fd, false) : nullptr;
    if (dn && is_dir)
        if (int e = check_empty(*dn)) return e;
    // A directory with content in read-only branches moves as a whole copy (aufs without
    // dirren would say EXDEV): its tree is copied up and it becomes opaque.
    bool copied_tree = false;
    if (is_dir) {
        bool has_lower = sn->layers.empty() || sn->layers.size() > 1 || sn->layers[0] != 0;
        if (has_lower) {
            if (int e = copy_up_tree(sn)) return e;
            copied_tree = true;
        }
    } else if (int e = copy_up(*sn)) {
        return e;
    }
    if (int e = ensure_upper_dir(*p)) return e;
    if (int e = ensure_upper_dir(*q)) return e;
    int pd;
    if (int e = upper_fd(*p, pd)) return e;
    int qd;
    if (int e = upper_fd(*q, qd)) return e;
    bool src_whiteout = lower_has(*p, name);
    if (is_dir && (copied_tree || lower_has(*q, newname))) {
        UniqueFd sd(::openat(pd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!sd) return errno;
        if (int e = make_opaque(sd.get())) return e;
        if (copied_tree)
            if (int e = tidy_copied(sd.get())) return e;
    }
    if (dn && fd.branch == 0 && is_dir) {
        UniqueFd dd(::openat(qd, newname.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!dd) return errno;
        if (int e = clear_markers(dd.get())) return e;
    }
    if (src_whiteout)
        if (int e = make_whiteout(pd, name)) return e;
    if (::renameat2(pd, name.c_str(), qd, newname.c_str(), flags) < 0) return errno;
    if (fd.upper_whiteout)
        if (int e = remove_whiteout(qd, newname)) return e;
    if (dn) {
        if (fd.branch == 0) {
            if (is_dir)
                xino_.erase(fd.st.st_dev, fd.st.st_ino);
            else
                after_unlink(dn.get(), fd.st);
        }
        drop_name(*dn, q, newname);
        if (is_dir) drop_dir_state(*dn);
    }
    drop_name(*sn, p, name);
    add_name(*sn, q, newname);
    if (is_dir) {
        ++gen_;  // what is below it now resolves through its new name
        // Its upper directory moved along (the descriptor follows it); its lower part is gone.
        if (sn->index) {
            index_cache_.remove(*sn->index);
            sn->index.reset();
        }
    }
    return 0;
}

int Engine::link(uint64_t id, uint64_t newparent, const std::string& newname, Entry& out) {
    auto lk = lock();
    ++changes_;
    if (!br_.has_rw()) return EROFS;
    if (int e = check_name(newname)) return e;
    NodePtr n = node(id), q = node(newparent);
    if (!n || !q) return ENOENT;
    if (int e = refresh(*n)) return e;
    if (int e = refresh(*q)) return e;
    Found f;
    if (int e = find_entry(*q, newname, f)) return e;
    if (f.found) return EEXIST;
    bool was_lower = n->branch != 0;
    // Linking a lower file copies it up once; both names then share the upper inode.
    if (int e = copy_up(*n)) return e;
    DirRef sd;
    std::string sname;
    if (int e = open_parent(*n, 0, sd, sname)) return e;
    if (was_lower) add_pseudo_link(*n, sd.get(), sname);
    if (int e = ensure_upper_dir(*q)) return e;
    int qd;
    if (int e = upper_fd(*q, qd)) return e;
    if (::linkat(sd.get(), sname.c_str(), qd, newname.c_str(), 0) < 0) return errno;
    if (f.upper_whiteout)
        if (int e = remove_whiteout(qd, newname)) return e;
    add_name(*n, q, newname);
    struct stat st;
    if (::fstatat(qd, newname.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) return errno;
    ++n->nlookup;
    fill_entry(*n, st, out);
    return 0;
}

int Engine::statfs(struct statfs& out) {
    auto lk = lock();
    if (::fstatfs(br_[0].root.get(), &out) < 0) return errno;
    out.f_namelen = kMaxNameLen;
    return 0;
}

}  // namespace sk::union_fs
