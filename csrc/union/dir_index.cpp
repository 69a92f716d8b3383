#include "union/dir_index.hpp"

#include <dirent.h>

#include <string_view>

#include "union/branch_entries.hpp"
#include "union/node.hpp"

namespace sk::union_fs {

DirIndex::DirIndex(const BranchStack& br, std::vector<int> layers,
                   const std::function<int(int, UniqueFd&)>& open)
    : layers_(std::move(layers)) {
    fds_.resize(layers_.size());
    std::vector<std::string> whited;
    for (size_t pos = 0; pos < layers_.size(); ++pos) {
        int b = layers_[pos];
        UniqueFd d;
        if (open(b, d)) continue;
        whited.clear();
        // A listing cut short by an error holds what was read: the engine cannot answer a
        // lookup with an error it would have to make up.
        for_each_branch_entry(
            d.get(), br[static_cast<size_t>(b)].whiteouts,
            [&](std::string_view nm, unsigned char type, uint64_t ino) {
                auto [it, fresh] = names_.try_emplace(std::string(nm));
                Slot& s = it->second;
                if (fresh) {
                    s.first = static_cast<int>(pos);
                    s.type = type;
                    s.ino = static_cast<ino_t>(ino);
                    if (type == DT_DIR) s.dirs.push_back(static_cast<int>(pos));
                    s.closed = type != DT_DIR;
                    order_.push_back(&*it);
                } else if (!s.closed) {
                    if (type == DT_DIR)
                        s.dirs.push_back(static_cast<int>(pos));
                    else
                        s.closed = true;
                }
            },
            [&](std::string_view hidden) { whited.emplace_back(hidden); });
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

}  // namespace sk::union_fs
