// apply_tar(): a hardlink whose target is in a lower layer only (overlay, aufs).
//
// A layer tar may link to a file of a parent layer: drivers with a full copy of the parents
// (vfs, devicemapper) just link it. A driver that applies into the layer's own directory has
// no such file there, and link() cannot cross layers; so the target is first copied up into
// the layer, as overlayfs and aufs copy up a file that a container links to: its missing
// parent directories with their metadata (times restored once the child is in), then the
// file with its data and metadata. The file's other names in its layer that still show are
// linked to the copy too, so that, as in a full copy, every name of the file stays one inode.
// Paths are looked up in the lower directories the way the union shows them: a whiteout, a
// non-directory or an opaque directory hides what lies below it, in this layer too.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <string>
#include <vector>

#include "archive/applier.hpp"
#include "common/dir_entries.hpp"
#include "common/syserror.hpp"
#include "common/unique_fd.hpp"
#include "copyup/copy.hpp"

namespace sk {

namespace wh = whiteout;

namespace {

UniqueFd open_dir_at(int dirfd, const std::string& name) {
    return UniqueFd(openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

UniqueFd dup_fd(int fd) { return UniqueFd(fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

std::vector<std::string> components(std::string_view path) {
    std::vector<std::string> out;
    std::size_t pos = 0;
    while (pos <= path.size()) {
        std::size_t end = path.find('/', pos);
        if (end == std::string_view::npos) end = path.size();
        if (end > pos) out.emplace_back(path.substr(pos, end - pos));
        pos = end + 1;
    }
    return out;
}

class LowerCopy {
public:
    LowerCopy(int root, std::string label, const ApplyOptions& opt)
        : root_(root), label_(std::move(label)), opt_(opt) {}

    bool copy_up(const std::string& target);

private:
    // A path as the lower directories show it.
    struct Hit {
        std::size_t layer;              // index in opt_.lowers
        UniqueFd dir;                   // the directory holding it, in that layer
        struct stat st;
        std::vector<UniqueFd> parents;  // per parent directory: the directory holding it in
                                        // the uppermost layer that has it (its metadata shows)
    };
    std::optional<Hit> find(const std::vector<std::string>& comps);
    bool hidden_here(const std::vector<std::string>& comps);
    bool whiteout_in(int dirfd, const std::string& name, const std::string& label) const;
    UniqueFd make_parents(const std::vector<std::string>& comps, const Hit& hit);
    void other_names(int dirfd, const std::string& rel, const struct stat& st,
                     std::vector<std::string>& out);
    void link_other_names(const Hit& hit, const std::vector<std::string>& comps, int dir);
    void restore_times();

    int root_;
    std::string label_;
    const ApplyOptions& opt_;
    // Directories make_parents made, with the metadata their times come back from once
    // their children are in.
    struct Made {
        UniqueFd fd;
        struct stat st;
    };
    std::vector<Made> made_;
};

// Is `name` in directory dirfd of a layer stored in the applier's dialect deleted there?
bool LowerCopy::whiteout_in(int dirfd, const std::string& name, const std::string& label) const {
    if (opt_.dialect == wh::Dialect::oci) {
        struct stat st;
        std::string marker = std::string(wh::kPrefix) + name;
        if (fstatat(dirfd, marker.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return true;
        if (errno != ENOENT) throw_errno(label + "/" + marker);
        return false;
    }
    return wh::is_whiteout_at(dirfd, name, opt_.dialect, label);
}

// Does this layer (as applied so far) hide the path, or have something else there already?
bool LowerCopy::hidden_here(const std::vector<std::string>& comps) {
    UniqueFd dir = dup_fd(root_);
    std::string label = label_;
    for (std::size_t k = 0; k < comps.size(); ++k) {
        if (!dir) return false;  // the rest of the path is not in this layer
        if (wh::is_opaque_fd(dir.get(), opt_.dialect, label)) return true;
        if (whiteout_in(dir.get(), comps[k], label)) return true;
        struct stat st;
        if (fstatat(dir.get(), comps[k].c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            (k + 1 == comps.size() || !S_ISDIR(st.st_mode)))
            return true;
        dir = open_dir_at(dir.get(), comps[k]);
        label += "/" + comps[k];
    }
    return false;
}

std::optional<LowerCopy::Hit> LowerCopy::find(const std::vector<std::string>& comps) {
    struct Layer {
        std::size_t index;
        UniqueFd fd;
        std::string label;
    };
    std::vector<Layer> level;  // the layers' directories that show at this depth, uppermost first
    for (std::size_t i = 0; i < opt_.lowers.size(); ++i) {
        UniqueFd fd(open(opt_.lowers[i].c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!fd) throw_errno(opt_.lowers[i]);
        bool opaque = wh::is_opaque_fd(fd.get(), opt_.dialect, opt_.lowers[i]);
        level.push_back(Layer{i, std::move(fd), opt_.lowers[i]});
        if (opaque) break;
    }
    Hit hit;
    for (std::size_t k = 0; k < comps.size(); ++k) {
        const std::string& name = comps[k];
        const bool last = k + 1 == comps.size();
        std::vector<Layer> next;
        for (Layer& l : level) {
            if (whiteout_in(l.fd.get(), name, l.label)) break;
            struct stat st;
            if (fstatat(l.fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT) continue;
                throw_errno(l.label + "/" + name);
            }
            if (last) {
                if (S_ISDIR(st.st_mode)) return std::nullopt;
                hit.layer = l.index;
                hit.dir = std::move(l.fd);
                hit.st = st;
                return hit;
            }
            if (!S_ISDIR(st.st_mode)) break;
            if (next.empty()) hit.parents.push_back(dup_fd(l.fd.get()));
            UniqueFd sub = open_dir_at(l.fd.get(), name);
            if (!sub) throw_errno(l.label + "/" + name);
            bool opaque = wh::is_opaque_fd(sub.get(), opt_.dialect, l.label + "/" + name);
            next.push_back(Layer{l.index, std::move(sub), l.label + "/" + name});
            if (opaque) break;
        }
        if (next.empty()) return std::nullopt;
        level = std::move(next);
    }
    return std::nullopt;
}

// The parent directory of the path in this layer, made as the lowers show them where this
// layer has none yet; returned open.
UniqueFd LowerCopy::make_parents(const std::vector<std::string>& comps, const Hit& hit) {
    UniqueFd dir = dup_fd(root_);
    std::string label = label_;
    for (std::size_t k = 0; k + 1 < comps.size(); ++k) {
        const std::string& name = comps[k];
        label += "/" + name;
        UniqueFd sub = open_dir_at(dir.get(), name);
        if (!sub) {
            if (errno != ENOENT) throw_errno(label);
            copyup::copy_entry_at(hit.parents[k].get(), name.c_str(), dir.get(), name.c_str());
            sub = open_dir_at(dir.get(), name);
            if (!sub) throw_errno(label);
            // The lower directory's opacity hid the layers below it, not those above.
            wh::clear_opaque_fd(sub.get(), opt_.dialect, label);
            struct stat st;
            if (fstat(sub.get(), &st) < 0) throw_errno(label);
            made_.push_back(Made{dup_fd(sub.get()), st});
        }
        dir = std::move(sub);
    }
    return dir;
}

// Making children moved the times of the directories make_parents made: put them back,
// deepest first, once all are in.
void LowerCopy::restore_times() {
    for (auto it = made_.rbegin(); it != made_.rend(); ++it) {
        struct timespec times[2] = {it->st.st_atim, it->st.st_mtim};
        if (futimens(it->fd.get(), times) < 0) throw_errno(label_);
    }
    made_.clear();
}

// The names below directory dirfd (at `rel`) of one layer of the file `st`.
void LowerCopy::other_names(int dirfd, const std::string& rel, const struct stat& st,
                            std::vector<std::string>& out) {
    const std::size_t want = st.st_nlink;  // every name, the one copied up included
    std::vector<DirEntry> entries = list_dir(dirfd, label_ + "/" + rel);
    for (const DirEntry& e : entries) {
        if (out.size() >= want) return;
        // aufs bookkeeping (its pseudo-links are names of the same files) and markers
        if (opt_.dialect == wh::Dialect::oci && e.name.starts_with(wh::kPrefix)) continue;
        std::string path = rel.empty() ? e.name : rel + "/" + e.name;
        bool is_dir = e.type == DT_DIR;
        if (e.type == DT_UNKNOWN) {
            struct stat est;
            is_dir = fstatat(dirfd, e.name.c_str(), &est, AT_SYMLINK_NOFOLLOW) == 0 &&
                     S_ISDIR(est.st_mode);
        }
        if (is_dir) {
            UniqueFd sub = open_dir_at(dirfd, e.name);
            if (sub) other_names(sub.get(), path, st, out);
        } else if (e.ino == st.st_ino) {
            out.push_back(std::move(path));
        }
    }
}

bool LowerCopy::copy_up(const std::string& target) {
    const std::vector<std::string> comps = components(target);
    if (comps.empty() || hidden_here(comps)) return false;
    std::optional<Hit> hit = find(comps);
    if (!hit) return false;
    UniqueFd dir = make_parents(comps, *hit);
    copyup::copy_entry_at(hit->dir.get(), comps.back().c_str(), dir.get(), comps.back().c_str());
    if (hit->st.st_nlink > 1) link_other_names(*hit, comps, dir.get());
    restore_times();
    return true;
}

// The file's other names in its layer: each that still shows (the same file there, not
// hidden, not in this layer yet) becomes a link to the copy in directory `dir`.
void LowerCopy::link_other_names(const Hit& hit, const std::vector<std::string>& comps, int dir) {

    std::vector<std::string> names;
    UniqueFd layer(open(opt_.lowers[hit.layer].c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!layer) throw_errno(opt_.lowers[hit.layer]);
    other_names(layer.get(), "", hit.st, names);
    for (const std::string& name : names) {
        std::vector<std::string> c = components(name);
        if (c == comps || hidden_here(c)) continue;
        std::optional<Hit> other = find(c);
        if (!other || other->layer != hit.layer || other->st.st_ino != hit.st.st_ino) continue;
        UniqueFd odir = make_parents(c, *other);
        if (linkat(dir, comps.back().c_str(), odir.get(), c.back().c_str(), 0) < 0)
            throw_errno(label_ + "/" + name);
    }
}

}  // namespace

bool Applier::copy_up_from_lowers(const EntryPath& target) {
    if (opt_.lowers.empty() || opt_.dialect == wh::Dialect::none) return false;
    return LowerCopy(root_, dirs_.label(), opt_).copy_up(target.path);
}

}  // namespace sk
