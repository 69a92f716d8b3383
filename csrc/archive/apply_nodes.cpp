// apply_tar(): creating one node (file, directory, link, device) with its metadata.
//
// Tar replacement rules: an entry over an existing non-directory replaces it (never writes
// through it: a regular file is created O_EXCL after the old name is unlinked); a directory
// over a directory keeps the contents and takes the new metadata; anything else over a
// directory removes the directory tree first.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "archive/applier.hpp"
#include "archive/tar_input.hpp"
#include "common/in_root.hpp"
#include "common/remove_tree.hpp"
#include "common/syserror.hpp"
#include "common/unique_fd.hpp"

namespace sk {

namespace wh = whiteout;

namespace {

// pwrite() everything; false with errno set on failure.
bool write_all(int fd, const char* p, size_t n, int64_t offset) {
    while (n) {
        ssize_t w = pwrite(fd, p, n, offset);
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += w;
        n -= static_cast<size_t>(w);
        offset += w;
    }
    return true;
}

bool is_overlay_whiteout(const struct stat& st) {
    return S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
}

}  // namespace

NodeMeta Applier::meta_of(struct archive_entry* e, bool is_dir) {
    NodeMeta m;
    la_int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);
    if (uid < 0 || uid >= UINT32_MAX || gid < 0 || gid >= UINT32_MAX)
        fail("has an invalid owner " + std::to_string(uid) + ":" + std::to_string(gid));
    m.uid = static_cast<uid_t>(uid);
    m.gid = static_cast<gid_t>(gid);
    m.perm = archive_entry_perm(e) & 07777;
    // Without our owner the setuid/setgid bits would apply to the caller: drop them.
    if (!opt_.same_owner && !is_dir) m.perm &= ~static_cast<mode_t>(S_ISUID | S_ISGID);
    m.times[0] = {0, UTIME_OMIT};
    m.times[1] = {0, UTIME_OMIT};
    if (archive_entry_atime_is_set(e))
        m.times[0] = {archive_entry_atime(e), archive_entry_atime_nsec(e)};
    if (archive_entry_mtime_is_set(e))
        m.times[1] = {archive_entry_mtime(e), archive_entry_mtime_nsec(e)};
    try {
        m.xattrs = entry_xattrs(e, opt_.same_owner);
    } catch (const ArchiveError& x) {
        fail(x.what());
    }
    return m;
}

// Removes whatever exists at p (a directory with all its contents). Returns whether the
// removed entry was an overlay whiteout.
bool Applier::clear_entry(int dirfd, const EntryPath& p) {
    std::string name(p.base());
    struct stat st;
    if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT) return false;
        throw_errno(label_of(p.path));
    }
    dirs_.forget(p.path);
    if (S_ISDIR(st.st_mode)) {
        remove_tree_at(dirfd, name, label_of(p.parent()));
        return false;
    }
    if (unlinkat(dirfd, name.c_str(), 0) < 0 && errno != ENOENT) throw_errno(label_of(p.path));
    return is_overlay_whiteout(st);
}

void Applier::make_node(const EntryPath& p, struct archive* in, struct archive_entry* e) {
    const char* hardlink = hardlink_of(e);
    mode_t type = archive_entry_filetype(e);
    if (!hardlink && type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK &&
        type != AE_IFCHR && type != AE_IFBLK && type != AE_IFIFO)
        fail("has an unsupported type (mode " + std::to_string(archive_entry_mode(e)) + ")");

    const RootDirs::Dir& dir = parent_dir(p.parent(), true);
    int dirfd = dir.fd;
    if (hardlink) return make_hardlink(dirfd, p, hardlink);
    NodeMeta m = meta_of(e, type == AE_IFDIR);
    switch (type) {
        case AE_IFREG: return make_regular(dir, p, in, archive_entry_size(e), m);
        case AE_IFDIR: return make_dir(dir, p, m);
        case AE_IFLNK: return make_symlink(dirfd, p, symlink_of(e), m);
        default:
            return make_special(dirfd, p, type,
                                type == AE_IFIFO ? 0 : makedev(archive_entry_rdevmajor(e),
                                                               archive_entry_rdevminor(e)),
                                m);
    }
}

int Applier::create_file(int dirfd, const EntryPath& p, mode_t mode) {
    std::string name(p.base());
    const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd = openat(dirfd, name.c_str(), flags, mode);
    if (fd < 0 && errno == EEXIST) {
        clear_entry(dirfd, p);
        fd = openat(dirfd, name.c_str(), flags, mode);
    }
    if (fd < 0) throw_errno(label_of(p.path));
    return fd;
}

void Applier::make_regular(const RootDirs::Dir& dir, const EntryPath& p, struct archive* in,
                           int64_t size, const NodeMeta& m) {
    // Most entries need neither chown nor chmod once created with their permission bits:
    // skip the calls when the kernel's defaults (owner, umask, no inherited ACL) already
    // give the result.
    if (size > 0) {
        declared_ += static_cast<uint64_t>(size);
        if (opt_.max_size && declared_ > opt_.max_size)
            fail("the layer's files declare more than " + std::to_string(opt_.max_size) +
                 " bytes (raise the limit with -o max-layer-size=SIZE)");
    }
    bool owner_ok = !opt_.same_owner || owner_is_default(dir, m);
    bool mode_ok = dir.plain_mode && (m.perm & 07000) == 0 && (m.perm & umask_) == 0 &&
                   m.xattrs.empty();
    UniqueFd fd(create_file(dir.fd, p, m.perm & 0777));
    // Data blocks come with their offsets: a sparse entry leaves holes between them.
    int64_t end = 0;
    if (size > 0) {
        for (;;) {
            const void* data;
            size_t len;
            la_int64_t offset;
            int rc = archive_read_data_block(in, &data, &len, &offset);
            if (rc == ARCHIVE_EOF) break;
            if (rc != ARCHIVE_OK) {
                std::string why = input_->stream_error();
                const char* msg = archive_error_string(in);
                if (why.empty()) why = msg ? msg : "read error";
                fail("data: " + why);
            }
            if (offset < 0 || offset > size || static_cast<int64_t>(len) > size - offset)
                fail("data beyond the declared size");
            if (!write_all(fd.get(), static_cast<const char*>(data), len, offset))
                throw_errno(label_of(p.path));
            bytes_ += len;
            end = offset + static_cast<int64_t>(len);
        }
        if (end < size && ftruncate(fd.get(), size) < 0) throw_errno(label_of(p.path));
    }
    // Owner first (chown clears setuid bits and file capabilities), then the mode, then
    // xattrs: an access ACL sets the group bits (its mask) last, as on the source.
    if (!owner_ok && fchown(fd.get(), m.uid, m.gid) < 0) throw_errno(label_of(p.path));
    if (!mode_ok && fchmod(fd.get(), m.perm) < 0) throw_errno(label_of(p.path));
    if (!m.xattrs.empty()) set_xattrs_fd(fd.get(), m.xattrs, label_of(p.path));
    if (futimens(fd.get(), m.times) < 0) throw_errno(label_of(p.path));
}

// An OCI whiteout or opaque marker kept as a file ("oci" dialect): always an empty regular
// file, whatever type the entry claims (aufs exports hardlink whiteouts to each other).
void Applier::make_marker_file(const EntryPath& p, struct archive_entry* e) {
    int dirfd = dir_fd(p.parent(), true);
    NodeMeta m = meta_of(e, false);
    UniqueFd fd(create_file(dirfd, p));
    if (opt_.same_owner && fchown(fd.get(), m.uid, m.gid) < 0) throw_errno(label_of(p.path));
    if (fchmod(fd.get(), m.perm & 0777) < 0) throw_errno(label_of(p.path));
    if (futimens(fd.get(), m.times) < 0) throw_errno(label_of(p.path));
}

void Applier::set_owner_at(int dirfd, const EntryPath& p, const NodeMeta& m) {
    if (!opt_.same_owner) return;
    std::string name(p.base());
    if (fchownat(dirfd, name.c_str(), m.uid, m.gid, AT_SYMLINK_NOFOLLOW) < 0)
        throw_errno(label_of(p.path));
}

void Applier::make_dir(const RootDirs::Dir& dir, const EntryPath& p, const NodeMeta& m) {
    int dirfd = dir.fd;
    std::string name(p.base());
    bool replaced_whiteout = false;
    if (mkdirat(dirfd, name.c_str(), 0700) < 0) {
        if (errno != EEXIST) throw_errno(label_of(p.path));
        struct stat st;
        if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0)
            throw_errno(label_of(p.path));
        if (!S_ISDIR(st.st_mode)) {
            replaced_whiteout = clear_entry(dirfd, p);
            if (mkdirat(dirfd, name.c_str(), 0700) < 0) throw_errno(label_of(p.path));
        }
    }
    struct stat st;
    if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) throw_errno(label_of(p.path));
    if (st.st_uid != m.uid || st.st_gid != m.gid) set_owner_at(dirfd, p, m);
    if (!m.xattrs.empty()) set_xattrs_at(dirfd, name.c_str(), m.xattrs, label_of(p.path));
    // A directory made where this layer had a whiteout hides the lower directory, exactly
    // as overlayfs itself does on rmdir + mkdir.
    if (replaced_whiteout && wh::opaque_xattr(opt_.dialect)) {
        UniqueFd sub(openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!sub) throw_errno(label_of(p.path));
        wh::set_opaque_fd(sub.get(), opt_.dialect, label_of(p.path));
    }

    DirFix fix{p.path, m.perm, {m.times[0], m.times[1]}, st.st_dev, st.st_ino, 0, {}};
    // The mode is set again at the end; the access ACL must follow it again then.
    for (const EntryXattr& x : m.xattrs)
        if (x.name == "system.posix_acl_access") fix.access_acl = x.value;
    for (char c : p.path) fix.depth += c == '/';
    auto [it, inserted] = dir_fix_index_.emplace(p.path, dir_fixes_.size());
    if (inserted)
        dir_fixes_.push_back(std::move(fix));
    else
        dir_fixes_[it->second] = std::move(fix);
}

void Applier::make_symlink(int dirfd, const EntryPath& p, const char* target, const NodeMeta& m) {
    if (!target || !*target) fail("is a symlink with an empty target");
    if (strlen(target) > kMaxEntryPath) fail("is a symlink with a target over 4095 bytes");
    std::string name(p.base());
    if (symlinkat(target, dirfd, name.c_str()) < 0) {
        if (errno != EEXIST) throw_errno(label_of(p.path));
        clear_entry(dirfd, p);
        if (symlinkat(target, dirfd, name.c_str()) < 0) throw_errno(label_of(p.path));
    }
    set_owner_at(dirfd, p, m);
    if (!m.xattrs.empty()) set_xattrs_at(dirfd, name.c_str(), m.xattrs, label_of(p.path));
    if (utimensat(dirfd, name.c_str(), m.times, AT_SYMLINK_NOFOLLOW) < 0)
        throw_errno(label_of(p.path));
}

// A hardlink's target is resolved inside the root like any path, must exist and must not
// be a directory; linkat() without AT_SYMLINK_FOLLOW links a symlink itself, never what it
// points to.
void Applier::make_hardlink(int dirfd, const EntryPath& p, const char* target) {
    EntryPath t;
    try {
        t = normalize_entry_path(target ? target : "", "hardlink target");
    } catch (const ArchiveError& x) {
        fail(x.what());
    }
    if (t.is_root()) fail("is a hardlink to the layer root");
    std::string tparent(t.parent()), tname(t.base());
    auto open_target = [&](UniqueFd& tdir, struct stat& tst) {
        tdir.reset(tparent.empty() ? fcntl(root_, F_DUPFD_CLOEXEC, 0)
                                   : open_in_root(root_, tparent.c_str(), O_RDONLY | O_DIRECTORY));
        if (tdir && fstatat(tdir.get(), tname.c_str(), &tst, AT_SYMLINK_NOFOLLOW) == 0)
            return true;
        if (errno != ENOENT && errno != ENOTDIR) throw_errno(label_of(t.path));
        return false;
    };
    UniqueFd tdir;
    struct stat tst;
    // A target only a parent layer has is copied up into this one first (lower_copy.cpp).
    if (!open_target(tdir, tst) && !(copy_up_from_lowers(t) && open_target(tdir, tst)))
        fail("is a hardlink to '" + t.path + "', which does not exist");
    if (S_ISDIR(tst.st_mode)) fail("is a hardlink to directory '" + t.path + "'");
    // A stored overlay whiteout is the absence of a file, not one to link to.
    if (is_overlay_whiteout(tst) && opt_.dialect != wh::Dialect::none)
        fail("is a hardlink to '" + t.path + "', which this layer deletes");

    std::string name(p.base());
    if (linkat(tdir.get(), tname.c_str(), dirfd, name.c_str(), 0) == 0) return;
    if (errno != EEXIST) throw_errno(label_of(p.path), label_of(t.path));
    struct stat st;
    if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == tst.st_dev &&
        st.st_ino == tst.st_ino)
        return;  // already that file (a link to itself, or a repeated entry)
    clear_entry(dirfd, p);
    if (linkat(tdir.get(), tname.c_str(), dirfd, name.c_str(), 0) < 0)
        throw_errno(label_of(p.path), label_of(t.path));
}

void Applier::make_special(int dirfd, const EntryPath& p, mode_t type, dev_t rdev,
                           const NodeMeta& m) {
    std::string name(p.base());
    if (mknodat(dirfd, name.c_str(), type | (m.perm & 0777), rdev) < 0) {
        if (errno != EEXIST) throw_errno(label_of(p.path));
        clear_entry(dirfd, p);
        if (mknodat(dirfd, name.c_str(), type | (m.perm & 0777), rdev) < 0)
            throw_errno(label_of(p.path));
    }
    set_owner_at(dirfd, p, m);
    // Just created by us, so not a symlink: fchmodat may follow the name safely.
    if (fchmodat(dirfd, name.c_str(), m.perm, 0) < 0) throw_errno(label_of(p.path));
    if (!m.xattrs.empty()) set_xattrs_at(dirfd, name.c_str(), m.xattrs, label_of(p.path));
    if (utimensat(dirfd, name.c_str(), m.times, AT_SYMLINK_NOFOLLOW) < 0)
        throw_errno(label_of(p.path));
}

}  // namespace sk
