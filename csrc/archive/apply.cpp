// apply_tar(): the entry loop, whiteouts, and the work left for the end of the stream.
#include "archive/apply.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <memory>

#include "archive/applier.hpp"
#include "archive/tar_input.hpp"
#include "archive/utf8_locale.hpp"
#include "common/dir_entries.hpp"
#include "common/dir_stack.hpp"
#include "common/in_root.hpp"
#include "common/remove_tree.hpp"
#include "common/syserror.hpp"
#include "common/unique_fd.hpp"

namespace sk {

namespace wh = whiteout;

namespace {

std::string shown(std::string_view name) {
    if (name.size() <= 300) return std::string(name);
    return std::string(name.substr(0, 300)) + "...";
}

std::string join(std::string_view dir, std::string_view name) {
    std::string p(dir);
    if (!p.empty()) p += '/';
    p += name;
    return p;
}

// The process umask, without changing it even for an instant (other threads may be
// creating files): /proc/self/status has it since Linux 4.7.
mode_t current_umask() {
    FILE* f = fopen("/proc/self/status", "re");
    if (!f) return 0777;
    char line[256];
    unsigned mask = 0777;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Umask: %o", &mask) == 1) break;
    fclose(f);
    return static_cast<mode_t>(mask & 0777);
}

}  // namespace

Applier::Applier(int rootfd, std::string label, const ApplyOptions& options)
    : root_(rootfd),
      opt_(options),
      dirs_(rootfd, std::move(label)),
      euid_(geteuid()),
      umask_(current_umask()) {}

void Applier::fail(const std::string& why) const {
    throw ArchiveError("entry '" + shown(current_) + "': " + why);
}

ApplyResult Applier::run(int fd) {
    Utf8ThreadLocale utf8;
    TarInput in(fd);
    input_ = &in;
    struct archive* a = in.tar();
    std::unique_ptr<struct archive_entry, void (*)(struct archive_entry*)> e(
        archive_entry_new(), archive_entry_free);
    if (!e) throw std::bad_alloc();
    for (;;) {
        int rc = archive_read_next_header2(a, e.get());
        if (rc == ARCHIVE_EOF) break;
        const RawPaxNames::Names* raw = in.raw_names();
        raw_ = raw ? *raw : RawPaxNames::Names{};
        // Warnings are errors here: libarchive warns about malformed PAX records or too many
        // chained special headers, and then hands out a guess. Only names it could not
        // convert are fine, when the raw bytes are known.
        if (rc != ARCHIVE_OK && !(rc == ARCHIVE_WARN && warning_is_harmless(a)))
            header_failed(in, rc);
        ++entries_;
        const char* name = raw_.path ? raw_.path->c_str() : archive_entry_pathname(e.get());
        if (!name) header_failed(in, ARCHIVE_WARN);
        current_ = name;
        apply_entry(a, e.get());
    }
    empty_opaque_dirs();
    restore_dir_metadata();
    std::string digest = in.finish();
    return ApplyResult{bytes_, entries_, "sha256:" + digest, in.compression()};
}

bool Applier::warning_is_harmless(struct archive* in) const {
    const char* m = archive_error_string(in);
    std::string_view msg = m ? m : "";
    if (msg.starts_with("Pathname can't be converted")) return raw_.path.has_value();
    if (msg.starts_with("Linkname can't be converted")) return raw_.linkpath.has_value();
    // Owners are restored by number.
    return msg.starts_with("Uname can't be converted") || msg.starts_with("Gname can't be converted");
}

const char* Applier::hardlink_of(struct archive_entry* e) const {
    if (raw_.linkpath && raw_.typeflag == '1') return raw_.linkpath->c_str();
    return archive_entry_hardlink(e);
}

const char* Applier::symlink_of(struct archive_entry* e) const {
    if (raw_.linkpath && raw_.typeflag == '2') return raw_.linkpath->c_str();
    return archive_entry_symlink(e);
}

void Applier::header_failed(TarInput& in, int rc) {
    std::string why = in.stream_error();
    if (why.empty() && in.empty_stream()) why = "empty stream: not a tar archive";
    if (why.empty()) {
        const char* m = archive_error_string(in.tar());
        why = m ? m : (rc == ARCHIVE_WARN ? "malformed header" : "unreadable header");
    }
    if (entries_ == 0) throw ArchiveError("bad tar stream at its start: " + why);
    throw ArchiveError("bad tar header after entry '" + shown(current_) + "': " + why);
}

void Applier::apply_entry(struct archive* in, struct archive_entry* e) {
    EntryPath p = normalize_entry_path(current_);
    if (p.is_root()) {
        // "./" itself: the layer root belongs to the driver, not to the stream.
        if (!hardlink_of(e) && archive_entry_filetype(e) == AE_IFDIR) return;
        fail("would replace the layer root");
    }
    if (in_bookkeeping(p)) return;
    wh::NameKind kind;
    try {
        kind = wh::classify(p.base());
    } catch (const ArchiveError& x) {
        fail(x.what());
    }
    switch (kind) {
        case wh::NameKind::meta: return;
        case wh::NameKind::opaque: apply_opaque(p, e); return;
        case wh::NameKind::whiteout:
            apply_whiteout(p, p.base().substr(wh::kPrefix.size()), e);
            return;
        case wh::NameKind::plain: break;
    }
    remember(p.path);
    make_node(p, in, e);
}

// aufs bookkeeping directories (".wh..wh.plnk/...") are skipped with everything in them; a
// whiteout cannot have contents.
bool Applier::in_bookkeeping(const EntryPath& p) {
    std::string_view parent = p.parent();
    if (parent.find(wh::kPrefix) == std::string_view::npos) return false;
    std::size_t pos = 0;
    while (pos <= parent.size()) {
        std::size_t end = parent.find('/', pos);
        if (end == std::string_view::npos) end = parent.size();
        std::string_view comp = parent.substr(pos, end - pos);
        if (comp.starts_with(wh::kMetaPrefix)) return true;
        if (comp.starts_with(wh::kPrefix)) fail("is inside whiteout '" + std::string(comp) + "'");
        pos = end + 1;
    }
    return false;
}

const RootDirs::Dir& Applier::parent_dir(std::string_view dir, bool create) {
    try {
        return dirs_.get(dir, create);
    } catch (const ArchiveError& x) {
        fail(x.what());
    }
}

void Applier::remember(std::string_view path) {
    if (!layer_indexed_) {
        if (!path.empty()) new_paths_.emplace_back(path);
        return;
    }
    while (!path.empty()) {
        if (!layer_paths_.emplace(path).second) return;  // its parents are known already
        std::size_t slash = path.rfind('/');
        path = slash == std::string_view::npos ? std::string_view() : path.substr(0, slash);
    }
}

bool Applier::in_layer(const std::string& path) {
    if (!layer_indexed_) {
        layer_indexed_ = true;
        layer_paths_.reserve(new_paths_.size() * 2);
        for (const std::string& p : new_paths_) remember(p);
        new_paths_.clear();
        new_paths_.shrink_to_fit();
    }
    return layer_paths_.count(path) != 0;
}

// Per OCI, a whiteout hides what lower layers have at that name, never what this same
// layer adds: a victim that is an entry of this stream survives, and if it is a directory
// only its lower contents go (it becomes opaque).
void Applier::apply_whiteout(const EntryPath& p, std::string_view victim_name,
                             struct archive_entry* e) {
    std::string_view parent = p.parent();
    std::string victim = join(parent, victim_name);
    std::string victim_base(victim_name);
    if (opt_.dialect == wh::Dialect::oci) {
        // aufs: a marker hides the lower branches only, so what this layer held at that
        // name before this stream (a tar applied onto a layer with content) goes here.
        bool earlier = !in_layer(victim);
        remember(p.path);
        if (earlier) {
            int dirfd = dir_fd(parent, false);
            if (dirfd >= 0) {
                dirs_.forget(victim);
                remove_tree_at(dirfd, victim_base, label_of(parent));
            }
        }
        make_marker_file(p, e);
        return;
    }
    remember(parent);
    bool same_layer = in_layer(victim);
    if (opt_.dialect == wh::Dialect::none) {
        if (same_layer) {
            opaque_dirs_.push_back(victim);
            return;
        }
        int dirfd = dir_fd(parent, false);
        if (dirfd < 0) return;
        dirs_.forget(victim);
        remove_tree_at(dirfd, victim_base, label_of(parent));
        return;
    }
    int dirfd = dir_fd(parent, true);
    if (same_layer) {
        UniqueFd sub(openat(dirfd, victim_base.c_str(),
                            O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (sub) wh::set_opaque_fd(sub.get(), opt_.dialect, label_of(victim));
        return;
    }
    dirs_.forget(victim);
    wh::make_whiteout_at(dirfd, victim_base, opt_.dialect, label_of(parent));
}

void Applier::apply_opaque(const EntryPath& p, struct archive_entry* e) {
    std::string_view parent = p.parent();
    switch (opt_.dialect) {
        case wh::Dialect::oci:
            remember(p.path);
            make_marker_file(p, e);
            break;
        case wh::Dialect::none:
            remember(parent);
            break;
        case wh::Dialect::overlay:
        case wh::Dialect::overlay_user:
            remember(parent);
            wh::set_opaque_fd(dir_fd(parent, true), opt_.dialect, label_of(parent));
            break;
    }
    // In every dialect the directory keeps only what this stream puts in it: the marker
    // hides the lower layers, and what this layer held there before the stream (a tar
    // applied onto a layer with content) goes at the end (empty_opaque_dirs).
    opaque_dirs_.emplace_back(parent);
}

// An opaque directory keeps only what this stream put in it, wherever the opaque marker sat
// in the stream (and aufs's own bookkeeping at the root: pseudo-links, its xino files).
void Applier::empty_opaque_dirs() {
    if (opaque_dirs_.empty()) return;
    std::sort(opaque_dirs_.begin(), opaque_dirs_.end());
    opaque_dirs_.erase(std::unique(opaque_dirs_.begin(), opaque_dirs_.end()), opaque_dirs_.end());
    dirs_.forget("");
    std::vector<std::string> work(opaque_dirs_.rbegin(), opaque_dirs_.rend());
    while (!work.empty()) {
        std::string dir = std::move(work.back());
        work.pop_back();
        UniqueFd fd(dir.empty() ? fcntl(root_, F_DUPFD_CLOEXEC, 0)
                                : open_in_root(root_, dir.c_str(),
                                               O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
        if (!fd) {
            if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) continue;
            throw_errno(label_of(dir));
        }
        std::string label = label_of(dir);
        for (const DirEntry& child : list_dir(fd.get(), label)) {
            std::string path = join(dir, child.name);
            if (opt_.dialect == wh::Dialect::oci && dir.empty() &&
                child.name.starts_with(std::string(wh::kPrefix) + std::string(wh::kPrefix)))
                continue;
            if (!in_layer(path)) {
                remove_tree_at(fd.get(), child.name, label);
                continue;
            }
            bool is_dir = child.type == DT_DIR;
            if (child.type == DT_UNKNOWN) {
                struct stat st;
                is_dir = fstatat(fd.get(), child.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                         S_ISDIR(st.st_mode);
            }
            if (is_dir) work.push_back(std::move(path));
        }
    }
}

void Applier::restore_dir_metadata() {
    std::stable_sort(dir_fixes_.begin(), dir_fixes_.end(),
                     [](const DirFix& a, const DirFix& b) { return a.depth > b.depth; });
    dirs_.forget("");
    for (const DirFix& fix : dir_fixes_) {
        UniqueFd fd(open_in_root(root_, fix.path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
        if (!fd) {
            // Replaced or removed by a later entry: its metadata went with it.
            if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) continue;
            throw_errno(label_of(fix.path));
        }
        struct stat st;
        if (fstat(fd.get(), &st) < 0) throw_errno(label_of(fix.path));
        if (st.st_dev != fix.dev || st.st_ino != fix.ino) continue;
        if (fchmod(fd.get(), fix.perm) < 0) throw_errno(label_of(fix.path));
        if (!fix.access_acl.empty() &&
            fsetxattr(fd.get(), "system.posix_acl_access", fix.access_acl.data(),
                      fix.access_acl.size(), 0) < 0)
            throw_errno(label_of(fix.path));
        if (futimens(fd.get(), fix.times) < 0) throw_errno(label_of(fix.path));
    }
}

ApplyResult apply_tar(int fd, const std::string& root, const ApplyOptions& options) {
    UniqueFd rootfd(open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!rootfd) throw_errno(root);
    Applier applier(rootfd.get(), root, options);
    return applier.run(fd);
}

}  // namespace sk
