// Copy-on-write btrees in dm's persistent-data layout: u64 keys, fixed-size values, every node
// one metadata block. Updates shadow the path from the root, so the tree of the committed
// transaction stays readable; a node shared with another tree (ref count > 1) is copied and its
// children gain a reference, which is how snapshots share mapping subtrees.
//
// Non-root nodes keep at least max_entries / 3 entries (thin_check enforces it): inserts
// rebalance with a sibling or split a full node on the way down; removes merge or rebalance
// an underfull node on the way back up.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>

#include "thin/transaction.hpp"

namespace sk::thin {

// What a leaf value refers to (a data block, a subtree): told when a leaf holding it is copied
// (inc) or when the value is overwritten, removed or its leaf deleted (dec).
class LeafRefs {
public:
    virtual ~LeafRefs() = default;
    virtual void inc(const uint8_t* value) = 0;
    virtual void dec(const uint8_t* value) = 0;
};

// Entries that fit a node with values of value_size bytes (a multiple of 3, as dm requires).
uint32_t node_max_entries(uint32_t value_size);

class Btree {
public:
    using Visit = std::function<void(uint64_t key, const uint8_t* value)>;

    Btree(Transaction& tm, uint32_t value_size, LeafRefs* refs = nullptr)
        : tm_(tm), vsize_(value_size), refs_(refs) {}

    uint32_t value_size() const { return vsize_; }

    // A new empty tree (one leaf); returns its root.
    uint64_t create_empty();
    bool lookup(uint64_t root, uint64_t key, uint8_t* value) const;
    // Insert or overwrite; returns the new root. The tree takes over the caller's reference
    // held by value. An overwritten value is released (dec) unless release_old is false.
    uint64_t insert(uint64_t root, uint64_t key, const uint8_t* value, bool* inserted = nullptr,
                    bool release_old = true);
    // Remove key if present; returns the new root. The removed value is copied to old_value
    // (if given) and released unless release is false.
    uint64_t remove(uint64_t root, uint64_t key, bool* removed = nullptr,
                    uint8_t* old_value = nullptr, bool release = true);
    // Drop one reference to the whole tree: nodes (and the values of leaves) that nothing
    // else references are freed.
    void del(uint64_t root);
    // Visit entries in key order: all, or those with lo <= key < hi.
    void walk(uint64_t root, const Visit& fn) const;
    void walk_range(uint64_t root, uint64_t lo, uint64_t hi, const Visit& fn) const;
    bool highest_key(uint64_t root, uint64_t* key) const;
    // Every node block of the tree, once per path (shared nodes repeat).
    void walk_nodes(uint64_t root, const std::function<void(uint64_t)>& fn) const;

private:
    uint8_t* shadow_node(uint64_t* b);
    uint8_t* shadow_child(uint8_t* parent, uint32_t i);
    void inc_children(const uint8_t* node);
    void make_room(uint8_t* parent, uint32_t i);
    void remove_below(uint8_t* node, uint64_t key, uint8_t* old_value, bool release);
    void fix_underflow(uint8_t* parent, uint32_t i);
    void walk_range_at(uint64_t b, uint64_t lo, std::optional<uint64_t> hi, const Visit& fn) const;

    Transaction& tm_;
    uint32_t vsize_;
    LeafRefs* refs_;
};

}  // namespace sk::thin
