#include "union/dir_index.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <string_view>

#include "common/dir_entries.hpp"
#include "union/node.hpp"
#include "whiteout/whiteout.hpp"

namespace sk::unionfs {

DirIndex::DirIndex(const BranchStack& br, const std::string& rel, std::vector<int> layers)
    : layers_(std::move(layers)) {
    fds_.resize(layers_.size());
    std::vector<std::string> whited;
    for (size_t pos = 0; pos < layers_.size(); ++pos) {
        int b = layers_[pos];
        UniqueFd d = br.open_dir(static_cast<size_t>(b), rel);
        if (!d) continue;
        const bool wh_counts = br[static_cast<size_t>(b)].whiteouts;
        whited.clear();
        for_each_entry(d.get(), [&](std::string_view nm, uint8_t type, ino_t ino) {
            if (nm.starts_with(whiteout::kPrefix)) {
                if (wh_counts && !nm.starts_with(whiteout::kMetaPrefix) &&
                    nm.size() > whiteout::kPrefix.size())
                    whited.emplace_back(nm.substr(whiteout::kPrefix.size()));
                return;
            }
            std::string name(nm);
            if (type == DT_UNKNOWN) {
                struct stat st;
                if (::fstatat(d.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) return;
                type = static_cast<uint8_t>(IFTODT(st.st_mode));
            }
            auto [it, fresh] = names_.try_emplace(std::move(name));
            Slot& s = it->second;
            if (fresh) {
                s.first = static_cast<int>(pos);
                s.type = type;
                s.ino = ino;
                if (type == DT_DIR) s.dirs.push_back(static_cast<int>(pos));
                s.closed = type != DT_DIR;
                order_.push_back(&*it);
            } else if (!s.closed) {
                if (type == DT_DIR)
                    s.dirs.push_back(static_cast<int>(pos));
                else
                    s.closed = true;
            }
        });
        // A whiteout hides the name in the branches below this one, not in this one.
        for (std::string& w : whited) names_[std::move(w)].closed = true;
        fds_[pos] = std::move(d);
        ++fd_count_;
    }
}

DirIndex::~DirIndex() {
    if (cache_) cache_->remove(*this);
}

IndexCache::~IndexCache() {
    for (DirIndex* idx : lru_) {
        idx->cache_ = nullptr;
        idx->owner_ = nullptr;
    }
}

void IndexCache::add(DirIndex& idx, Node* owner) {
    lru_.push_front(&idx);
    idx.cache_ = this;
    idx.pos_ = lru_.begin();
    idx.owner_ = owner;
    fds_ += idx.fd_count_;
    names_ += idx.names_.size();
}

void IndexCache::touch(DirIndex& idx) {
    if (idx.cache_ == this && idx.pos_ != lru_.begin()) lru_.splice(lru_.begin(), lru_, idx.pos_);
}

void IndexCache::remove(DirIndex& idx) {
    if (idx.cache_ != this) return;
    lru_.erase(idx.pos_);
    fds_ -= idx.fd_count_;
    names_ -= idx.names_.size();
    idx.cache_ = nullptr;
    idx.owner_ = nullptr;
}

void IndexCache::trim() {
    // The most recent index stays, however big: it is the one in use.
    while ((fds_ > max_fds_ || names_ > max_names_) && lru_.size() > 1) {
        DirIndex* victim = lru_.back();
        Node* owner = victim->owner_;
        remove(*victim);
        if (owner) owner->index.reset();  // whoever still uses it keeps it alive until done
    }
}

}  // namespace sk::unionfs
