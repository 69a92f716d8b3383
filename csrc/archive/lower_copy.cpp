// apply_tar(): a hardlink whose target is in a lower layer only (overlay, aufs).
//
// A layer tar may link to a file of a parent layer: drivers with a full copy of the parents
// (vfs, devicemapper) just link it. A driver that applies into the layer's own directory has
// no such file there, and link() cannot cross layers; so the target is first copied up into
// the layer, as overlayfs and aufs copy up a file that a container links to: its missing
// parent directories with their metadata (times restored once the child is in), then the
// file with its data and metadata. The target is looked up in the lower directories the way
// the union shows them: a whiteout, a non-directory or an opaque directory hides what lies
// below it, in this layer too.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "archive/applier.hpp"
#include "common/syserror.hpp"
#include "common/unique_fd.hpp"
#include "copyup/copy.hpp"

namespace sk {

namespace wh = whiteout;

namespace {

UniqueFd open_dir_at(int dirfd, const std::string& name) {
    return UniqueFd(openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

std::vector<std::string> components(const std::string& path) {
    std::vector<std::string> out;
    std::size_t pos = 0;
    while (pos <= path.size()) {
        std::size_t end = path.find('/', pos);
        if (end == std::string::npos) end = path.size();
        if (end > pos) out.emplace_back(path.substr(pos, end - pos));
        pos = end + 1;
    }
    return out;
}

}  // namespace

// Is `name` in directory dirfd of a layer stored in dialect d deleted by that layer?
bool Applier::whiteout_in(int dirfd, const std::string& name, const std::string& label) const {
    if (opt_.dialect == wh::Dialect::oci) {
        struct stat st;
        std::string marker = std::string(wh::kPrefix) + name;
        if (fstatat(dirfd, marker.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return true;
        if (errno != ENOENT) throw_errno(label + "/" + marker);
        return false;
    }
    return wh::is_whiteout_at(dirfd, name, opt_.dialect, label);
}

bool Applier::copy_up_from_lowers(const EntryPath& target) {
    if (opt_.lowers.empty() || opt_.dialect == wh::Dialect::none) return false;
    const std::vector<std::string> comps = components(target.path);
    if (comps.empty()) return false;

    // This layer first: what it already hides is hidden from the link too.
    {
        UniqueFd dir(fcntl(root_, F_DUPFD_CLOEXEC, 0));
        std::string label = dirs_.label();
        for (std::size_t k = 0; k < comps.size(); ++k) {
            if (!dir) break;  // the rest of the path is not in this layer
            if (wh::is_opaque_fd(dir.get(), opt_.dialect, label)) return false;
            if (whiteout_in(dir.get(), comps[k], label)) return false;
            if (k + 1 == comps.size()) break;
            struct stat st;
            if (fstatat(dir.get(), comps[k].c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                !S_ISDIR(st.st_mode))
                return false;
            dir = open_dir_at(dir.get(), comps[k]);
            label += "/" + comps[k];
        }
    }

    // The lower directories that show at each level, uppermost first.
    struct Layer {
        UniqueFd fd;
        std::string label;
    };
    std::vector<Layer> level;
    for (const std::string& lower : opt_.lowers) {
        UniqueFd fd(open(lower.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!fd) throw_errno(lower);
        bool opaque = wh::is_opaque_fd(fd.get(), opt_.dialect, lower);
        level.push_back(Layer{std::move(fd), lower});
        if (opaque) break;
    }
    // Per parent directory of the target: the layer directory that holds it and shows its
    // metadata (the uppermost one), kept open for the copy.
    std::vector<Layer> sources;
    int file_dir = -1;
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
                if (S_ISDIR(st.st_mode)) return false;
                file_dir = l.fd.get();
                break;
            }
            if (!S_ISDIR(st.st_mode)) break;
            if (next.empty()) sources.push_back(Layer{UniqueFd(fcntl(l.fd.get(), F_DUPFD_CLOEXEC, 0)), l.label});
            UniqueFd sub = open_dir_at(l.fd.get(), name);
            if (!sub) throw_errno(l.label + "/" + name);
            bool opaque = wh::is_opaque_fd(sub.get(), opt_.dialect, l.label + "/" + name);
            next.push_back(Layer{std::move(sub), l.label + "/" + name});
            if (opaque) break;
        }
        if (last) break;
        if (next.empty()) return false;
        // `level` must outlive the copy only for the file's directory: swap in the next one
        // once this one's last use (sources holds its own fds) is over.
        level = std::move(next);
    }
    if (file_dir < 0) return false;

    // Copy up: parent directories this layer lacks, then the file.
    struct Made {
        UniqueFd fd;
        struct stat st;
    };
    std::vector<Made> made;
    UniqueFd dir(fcntl(root_, F_DUPFD_CLOEXEC, 0));
    std::string label = dirs_.label();
    for (std::size_t k = 0; k + 1 < comps.size(); ++k) {
        const std::string& name = comps[k];
        label += "/" + name;
        UniqueFd sub = open_dir_at(dir.get(), name);
        if (!sub) {
            if (errno != ENOENT) throw_errno(label);
            struct stat st;
            copyup::copy_entry_at(sources[k].fd.get(), name.c_str(), dir.get(), name.c_str(),
                                  true, nullptr, &st);
            sub = open_dir_at(dir.get(), name);
            if (!sub) throw_errno(label);
            // The lower directory's opacity hid the layers below it, not those above.
            wh::clear_opaque_fd(sub.get(), opt_.dialect, label);
            if (fstat(sub.get(), &st) < 0) throw_errno(label);
            made.push_back(Made{UniqueFd(fcntl(sub.get(), F_DUPFD_CLOEXEC, 0)), st});
        }
        dir = std::move(sub);
    }
    copyup::copy_entry_at(file_dir, comps.back().c_str(), dir.get(), comps.back().c_str());
    // Making the children moved the times of the directories made here: put them back.
    for (auto it = made.rbegin(); it != made.rend(); ++it) {
        struct timespec times[2] = {it->st.st_atim, it->st.st_mtim};
        if (futimens(it->fd.get(), times) < 0) throw_errno(dirs_.label());
    }
    return true;
}

}  // namespace sk
