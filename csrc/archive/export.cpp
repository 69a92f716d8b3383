// export_tar(): a directory tree (or a list of changed paths in it) as an OCI layer tar.
//
// Order is deterministic: in each directory, the opaque marker first, then whiteouts, then
// the other entries, each group sorted by name (bytewise); a directory is followed by its
// contents. Stored whiteouts are converted to OCI ones, aufs/overlay bookkeeping is left out.
#include "archive/export.hpp"

#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "archive/entry_path.hpp"
#include "archive/utf8_locale.hpp"
#include "common/dir_entries.hpp"
#include "common/dir_stack.hpp"
#include "common/in_root.hpp"
#include "common/inode_key.hpp"
#include "common/syserror.hpp"
#include "common/unique_fd.hpp"

namespace sk {

namespace wh = whiteout;

namespace {

std::string join(std::string_view dir, std::string_view name) {
    std::string p(dir);
    if (!p.empty()) p += '/';
    p += name;
    return p;
}

// One directory entry as it will be written.
struct Child {
    enum Rank { kOpaque = 0, kWhiteout = 1, kContent = 2 };
    std::string name;      // on disk
    std::string tar_name;  // in the tar (".wh.<name>" for a stored overlay whiteout)
    struct stat st;
    Rank rank;
    bool operator<(const Child& o) const {
        return rank != o.rank ? rank < o.rank : tar_name < o.tar_name;
    }
};

class Exporter {
public:
    Exporter(int rootfd, std::string label, const ExportOptions& opt, TarOutput& out)
        : root_(rootfd),
          label_(std::move(label)),
          opt_(opt),
          out_(out),
          entry_(archive_entry_new(), archive_entry_free) {
        if (!entry_) throw std::bad_alloc();
    }

    void write_tree();
    void write_changes(const std::vector<std::pair<std::string, int>>& changes);
    uint64_t entries() const { return entries_; }

private:
    bool remade_empty_dir(int fd, const struct stat& st, const std::string& rel);
    bool classify(Child& c) const;
    std::vector<Child> children_of(int dirfd, const std::string& label) const;
    void write_content(int dirfd, const Child& c, const std::string& rel);
    void write_dir(int fd, const std::string& rel, const struct stat& st, bool oci_marker);
    void write_marker(const std::string& rel, const struct stat& st, mode_t perm);
    void start_entry(const std::string& rel, const struct stat& st);
    bool link_to_earlier(const struct stat& st, const std::string& rel);
    void add_xattrs(int fd, const std::string& path, const std::string& rel);
    void write_header(const std::string& rel);
    void write_data(int fd, off_t size, const std::string& rel);
    // The path of tar entry `rel` on disk, for messages (built only when one is needed).
    std::string where(const std::string& rel) const { return label_ + "/" + rel; }
    [[noreturn]] void write_failed(const std::string& what);

    int root_;
    std::string label_;
    const ExportOptions& opt_;
    TarOutput& out_;
    std::unique_ptr<struct archive_entry, void (*)(struct archive_entry*)> entry_;
    std::unordered_map<InodeKey, std::string, InodeKeyHash> first_link_;
    uint64_t entries_ = 0;
};

// Decides how an entry is written; false leaves it out.
bool Exporter::classify(Child& c) const {
    c.tar_name = c.name;
    c.rank = Child::kContent;
    if (S_ISSOCK(c.st.st_mode)) return false;  // tar cannot hold sockets
    switch (opt_.dialect) {
        case wh::Dialect::none: return true;
        case wh::Dialect::oci: {
            wh::NameKind kind;
            try {
                kind = wh::classify(c.name);
            } catch (const ArchiveError&) {
                kind = wh::NameKind::plain;
            }
            if (kind == wh::NameKind::meta) return false;
            if (kind == wh::NameKind::opaque) c.rank = Child::kOpaque;
            if (kind == wh::NameKind::whiteout) c.rank = Child::kWhiteout;
            return true;
        }
        case wh::Dialect::overlay:
        case wh::Dialect::overlay_user:
            if (S_ISCHR(c.st.st_mode) && c.st.st_rdev == makedev(0, 0)) {
                c.rank = Child::kWhiteout;
                c.tar_name = std::string(wh::kPrefix) + c.name;
            }
            return true;
    }
    return true;
}

std::vector<Child> Exporter::children_of(int dirfd, const std::string& label) const {
    std::vector<Child> kids;
    for (DirEntry& e : list_dir(dirfd, label)) {
        Child c;
        c.name = std::move(e.name);
        if (fstatat(dirfd, c.name.c_str(), &c.st, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno == ENOENT) continue;  // removed while we looked
            throw_errno(label + "/" + c.name);
        }
        if (classify(c)) kids.push_back(std::move(c));
    }
    std::sort(kids.begin(), kids.end());
    return kids;
}

void Exporter::start_entry(const std::string& rel, const struct stat& st) {
    struct archive_entry* e = entry_.get();
    archive_entry_clear(e);
    archive_entry_copy_pathname(e, rel.c_str());
    archive_entry_set_uid(e, st.st_uid);
    archive_entry_set_gid(e, st.st_gid);
    archive_entry_set_mode(e, st.st_mode);
    archive_entry_set_mtime(e, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

void Exporter::write_failed(const std::string& what) {
    out_.check();
    const char* m = archive_error_string(out_.tar());
    throw std::runtime_error(what + ": " + (m ? m : "tar writer failed"));
}

void Exporter::write_header(const std::string& rel) {
    int rc = archive_write_header(out_.tar(), entry_.get());
    // A warning means a name was not valid UTF-8 and went out as hdrcharset=BINARY.
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) write_failed(where(rel));
    ++entries_;
}

// An empty regular file: OCI whiteouts and opaque markers.
void Exporter::write_marker(const std::string& rel, const struct stat& st, mode_t perm) {
    struct stat m = st;
    m.st_mode = S_IFREG | perm;
    start_entry(rel, m);
    archive_entry_set_size(entry_.get(), 0);
    write_header(rel);
}

bool Exporter::link_to_earlier(const struct stat& st, const std::string& rel) {
    if (st.st_nlink < 2) return false;
    auto [it, inserted] = first_link_.emplace(inode_key(st), rel);
    if (inserted) return false;
    archive_entry_set_hardlink(entry_.get(), it->second.c_str());
    archive_entry_set_size(entry_.get(), 0);
    write_header(rel);
    return true;
}

void Exporter::add_xattrs(int fd, const std::string& path, const std::string& rel) {
    auto list = [&](char* buf, size_t size) {
        return fd >= 0 ? flistxattr(fd, buf, size) : llistxattr(path.c_str(), buf, size);
    };
    auto get = [&](const char* name, void* buf, size_t size) {
        return fd >= 0 ? fgetxattr(fd, name, buf, size) : lgetxattr(path.c_str(), name, buf, size);
    };
    char small[1024];
    std::vector<char> names;
    ssize_t n = list(small, sizeof small);
    if (n < 0 && errno == ERANGE) {
        for (;;) {
            ssize_t want = list(nullptr, 0);
            if (want < 0) break;
            names.resize(static_cast<size_t>(want) + 1);
            n = list(names.data(), names.size());
            if (n >= 0 || errno != ERANGE) break;
        }
    } else if (n > 0) {
        names.assign(small, small + n);
    }
    if (n < 0) {
        if (errno == ENOTSUP) return;
        throw SysError(errno, where(rel) + " (listxattr)");
    }
    if (n == 0) return;

    std::vector<std::pair<std::string, std::string>> xattrs;
    std::vector<char> value(256);
    for (size_t i = 0; i < static_cast<size_t>(n);) {
        std::string name(&names[i]);
        i += name.size() + 1;
        if (name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")) continue;
        ssize_t vn;
        for (;;) {
            vn = get(name.c_str(), value.data(), value.size());
            if (vn >= 0 || errno != ERANGE) break;
            ssize_t want = get(name.c_str(), nullptr, 0);
            if (want < 0) break;
            value.resize(static_cast<size_t>(want) + 1);
        }
        if (vn < 0) {
            if (errno == ENODATA) continue;  // removed while we looked
            throw SysError(errno, where(rel) + " (xattr " + name + ")");
        }
        xattrs.emplace_back(std::move(name), std::string(value.data(), static_cast<size_t>(vn)));
    }
    std::sort(xattrs.begin(), xattrs.end());
    for (auto& [name, val] : xattrs)
        archive_entry_xattr_add_entry(entry_.get(), name.c_str(), val.data(), val.size());
}

void Exporter::write_data(int fd, off_t size, const std::string& rel) {
    off_t left = size;
    while (left > 0) {
        // Read straight into the output block: the tar writer passes it through in place.
        auto [window, room] = out_.data_window();
        size_t want = static_cast<size_t>(std::min<off_t>(left, static_cast<off_t>(room)));
        ssize_t n = read(fd, window, want);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno(where(rel));
        }
        if (n == 0) throw std::runtime_error(where(rel) + ": file shrank while being exported");
        la_ssize_t w = archive_write_data(out_.tar(), window, static_cast<size_t>(n));
        if (w != n) write_failed(where(rel));
        left -= n;
    }
}

void Exporter::write_dir(int fd, const std::string& rel, const struct stat& st, bool oci_marker) {
    start_entry(rel, st);
    add_xattrs(fd, {}, rel);
    write_header(rel);
    const char* xattr = wh::opaque_xattr(opt_.dialect);
    if (xattr && wh::is_opaque_fd(fd, opt_.dialect, where(rel)))
        write_marker(rel + "/" + std::string(wh::kOpaque), st, 0600);
    if (oci_marker && opt_.dialect == wh::Dialect::oci) {
        struct stat mst;
        if (fstatat(fd, std::string(wh::kOpaque).c_str(), &mst, AT_SYMLINK_NOFOLLOW) == 0)
            write_marker(rel + "/" + std::string(wh::kOpaque), mst, mst.st_mode & 0777);
    }
}

// Everything but directories: regular files with their data, symlinks, devices, fifos, and
// whiteouts (stored ones converted to OCI files).
void Exporter::write_content(int dirfd, const Child& c, const std::string& rel) {
    if (c.rank != Child::kContent) {
        // An OCI whiteout on disk keeps its mode; a converted overlay one gets 0600.
        mode_t perm = opt_.dialect == wh::Dialect::oci ? (c.st.st_mode & 0777) : 0600;
        write_marker(rel, c.st, perm);
        return;
    }
    start_entry(rel, c.st);
    if (link_to_earlier(c.st, rel)) return;
    // Extended attributes of what the name itself is (l*xattr through the directory fd).
    std::string at_path = "/proc/self/fd/" + std::to_string(dirfd) + "/" + c.name;
    switch (c.st.st_mode & S_IFMT) {
        case S_IFREG: {
            UniqueFd fd(openat(dirfd, c.name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
            if (!fd) throw_errno(where(rel));
            archive_entry_set_size(entry_.get(), c.st.st_size);
            add_xattrs(fd.get(), {}, rel);
            write_header(rel);
            write_data(fd.get(), c.st.st_size, rel);
            return;
        }
        case S_IFLNK: {
            std::string target(static_cast<size_t>(PATH_MAX), '\0');
            ssize_t n = readlinkat(dirfd, c.name.c_str(), target.data(), target.size());
            if (n < 0) throw_errno(where(rel));
            target.resize(static_cast<size_t>(n));
            archive_entry_copy_symlink(entry_.get(), target.c_str());
            break;
        }
        case S_IFCHR:
        case S_IFBLK:
            archive_entry_set_rdevmajor(entry_.get(), major(c.st.st_rdev));
            archive_entry_set_rdevminor(entry_.get(), minor(c.st.st_rdev));
            break;
        default: break;  // fifo
    }
    add_xattrs(-1, at_path, rel);
    write_header(rel);
}

void Exporter::write_tree() {
    struct Frame {
        std::string prefix;
        std::vector<Child> children;
        std::size_t next = 0;
    };
    DirStack stack(root_, label_);
    struct stat rst;
    if (fstat(root_, &rst) < 0) throw_errno(label_);
    // The root is not an entry, but an opaque root still needs its marker.
    if (wh::opaque_xattr(opt_.dialect) && wh::is_opaque_fd(root_, opt_.dialect, label_))
        write_marker(std::string(wh::kOpaque), rst, 0600);

    std::vector<Frame> frames;
    frames.push_back(Frame{"", children_of(root_, label_)});
    while (!frames.empty()) {
        Frame& f = frames.back();
        if (f.next == f.children.size()) {
            frames.pop_back();
            stack.pop();
            continue;
        }
        const Child c = std::move(f.children[f.next++]);
        std::string rel = f.prefix + c.tar_name;
        if (c.rank != Child::kContent || !S_ISDIR(c.st.st_mode)) {
            write_content(stack.top(), c, rel);
            continue;
        }
        stack.push(c.name);
        write_dir(stack.top(), rel, c.st, false);
        if (c.st.st_dev != stack.root_dev()) {  // a mount point: its contents are not ours
            stack.pop();
            continue;
        }
        std::vector<Child> kids = children_of(stack.top(), stack.path());
        frames.push_back(Frame{rel + "/", std::move(kids)});
    }
}

// Is the directory `rel` (open as fd) empty, as the parent tree's is, and otherwise the
// same there (mode, owner, xattr names) but for its mtime? Only the naive diff asks
// (opt_.parent set, dialect none): stored dialects record opacity themselves.
bool Exporter::remade_empty_dir(int fd, const struct stat& st, const std::string& rel) {
    if (!opt_.parent || opt_.dialect != wh::Dialect::none) return false;
    if (!list_dir(fd, label_ + "/" + rel).empty()) return false;
    UniqueFd proot(open(opt_.parent->c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!proot) throw_errno(*opt_.parent);
    UniqueFd pdir(open_in_root(proot.get(), rel.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
    if (!pdir) return false;
    struct stat pst;
    if (fstat(pdir.get(), &pst) < 0) throw_errno(*opt_.parent + "/" + rel);
    if (pst.st_mode != st.st_mode || pst.st_uid != st.st_uid || pst.st_gid != st.st_gid)
        return false;
    if (!list_dir(pdir.get(), *opt_.parent + "/" + rel).empty()) return false;
    char a[1024], b[1024];
    ssize_t na = flistxattr(fd, a, sizeof a), nb = flistxattr(pdir.get(), b, sizeof b);
    if (na != nb || (na > 0 && memcmp(a, b, static_cast<size_t>(na)) != 0)) return false;
    return true;
}

void Exporter::write_changes(const std::vector<std::pair<std::string, int>>& changes) {
    std::unordered_set<std::string> written;
    // Directories with a deleted entry (relative paths): see the opaque marker below.
    std::unordered_set<std::string> with_deletes;
    for (const auto& [path, kind] : changes) {
        if (kind != kChangeDelete) continue;
        std::size_t slash = path.find_last_of('/');
        if (slash == std::string::npos || slash == 0) continue;
        std::size_t start = path.find_first_not_of('/');
        if (start < slash) with_deletes.insert(path.substr(start, slash - start));
    }
    for (const auto& [path, kind] : changes) {
        if (path.empty() || path[0] != '/')
            throw ValueErr("change path '" + path + "' is not absolute");
        if (kind != kChangeModify && kind != kChangeAdd && kind != kChangeDelete)
            throw ValueErr("change kind " + std::to_string(kind) + " of '" + path +
                           "' is not 0, 1 or 2");
        EntryPath p;
        try {
            p = normalize_entry_path(path, "change path");
        } catch (const ArchiveError& e) {
            throw ValueErr(e.what());
        }
        if (p.is_root()) continue;
        std::string parent(p.parent()), base(p.base());

        if (kind == kChangeDelete) {
            wh::NameKind nk;
            try {
                nk = wh::classify(base);
            } catch (const ArchiveError&) {
                nk = wh::NameKind::meta;
            }
            if (nk != wh::NameKind::plain) continue;  // bookkeeping, or not expressible
            std::string rel = join(parent, std::string(wh::kPrefix) + base);
            if (!written.insert(rel).second) continue;
            struct stat zero = {};
            write_marker(rel, zero, 0600);
            continue;
        }

        UniqueFd dir(parent.empty() ? fcntl(root_, F_DUPFD_CLOEXEC, 0)
                                    : open_in_root(root_, parent.c_str(), O_RDONLY | O_DIRECTORY));
        if (!dir) throw_errno(label_ + "/" + parent);
        Child c;
        c.name = base;
        if (fstatat(dir.get(), base.c_str(), &c.st, AT_SYMLINK_NOFOLLOW) < 0)
            throw_errno(label_ + "/" + p.path);
        if (!classify(c)) continue;
        std::string rel = join(parent, c.tar_name);
        if (!written.insert(rel).second) continue;
        if (c.rank != Child::kContent || !S_ISDIR(c.st.st_mode)) {
            write_content(dir.get(), c, rel);
            continue;
        }
        UniqueFd sub(openat(dir.get(), base.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!sub) throw_errno(label_ + "/" + p.path);
        std::string marker = rel + "/" + std::string(wh::kOpaque);
        write_dir(sub.get(), rel, c.st, !written.count(marker));
        // A modified directory that is empty and lost no entry was removed and made again
        // (see changes::scan): it goes out opaque, as overlay and aufs store it, so that
        // every driver's diff of the same change is the same.
        if (kind == kChangeModify && !written.count(marker) && !with_deletes.count(p.path) &&
            remade_empty_dir(sub.get(), c.st, p.path))
            write_marker(marker, c.st, 0600);
        written.insert(marker);
    }
}

}  // namespace

ExportResult export_tar(const std::string& root, int fd, const ExportOptions& options) {
    UniqueFd rootfd(open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!rootfd) throw_errno(root);
    Utf8ThreadLocale utf8;
    TarOutput out(fd, options.compression);
    Exporter exporter(rootfd.get(), root, options, out);
    if (options.changes)
        exporter.write_changes(*options.changes);
    else
        exporter.write_tree();
    TarOutput::Result r = out.finish();
    return ExportResult{r.bytes, exporter.entries(), "sha256:" + r.digest};
}

}  // namespace sk
