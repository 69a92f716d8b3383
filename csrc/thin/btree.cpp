#include "thin/btree.hpp"

#include <cstring>
#include <vector>

namespace sk::thin {
namespace {

// A view of one node block.
class Node {
public:
    explicit Node(const uint8_t* p) : p_(const_cast<uint8_t*>(p)) {}

    bool leaf() const { return load32(p_ + 4) & kLeafNode; }
    uint32_t nr() const { return load32(p_ + 16); }
    void set_nr(uint32_t n) { store32(p_ + 16, n); }
    uint32_t max() const { return load32(p_ + 20); }
    uint32_t vsize() const { return load32(p_ + 24); }
    uint64_t key(uint32_t i) const { return load64(p_ + kNodeHeaderSize + 8 * size_t{i}); }
    void set_key(uint32_t i, uint64_t k) { store64(p_ + kNodeHeaderSize + 8 * size_t{i}, k); }
    uint8_t* val(uint32_t i) const {
        return p_ + kNodeHeaderSize + 8 * size_t{max()} + size_t{i} * vsize();
    }
    uint64_t child(uint32_t i) const { return load64(val(i)); }
    void set_child(uint32_t i, uint64_t b) { store64(val(i), b); }

    // First index whose key is >= k (nr() if none).
    uint32_t lower_bound(uint64_t k) const {
        uint32_t lo = 0, hi = nr();
        while (lo < hi) {
            uint32_t mid = (lo + hi) / 2;
            if (key(mid) < k)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo;
    }
    // Index of the child whose range holds k: the last key <= k, or -1 if k is below them all.
    int child_index(uint64_t k) const {
        uint32_t i = lower_bound(k);
        if (i < nr() && key(i) == k) return static_cast<int>(i);
        return static_cast<int>(i) - 1;
    }

    void insert_at(uint32_t i, uint64_t k, const uint8_t* v) {
        uint32_t n = nr();
        uint8_t* keys = p_ + kNodeHeaderSize;
        std::memmove(keys + 8 * (i + 1), keys + 8 * i, 8 * size_t{n - i});
        std::memmove(val(i + 1), val(i), size_t{vsize()} * (n - i));
        set_key(i, k);
        std::memcpy(val(i), v, vsize());
        set_nr(n + 1);
    }
    void erase_at(uint32_t i) {
        uint32_t n = nr();
        uint8_t* keys = p_ + kNodeHeaderSize;
        std::memmove(keys + 8 * i, keys + 8 * (i + 1), 8 * size_t{n - i - 1});
        std::memmove(val(i), val(i + 1), size_t{vsize()} * (n - i - 1));
        set_nr(n - 1);
    }
    // Copy count entries from src[from..] over this[to..] (no overlap between nodes).
    void copy_from(uint32_t to, const Node& src, uint32_t from, uint32_t count) {
        std::memcpy(p_ + kNodeHeaderSize + 8 * size_t{to}, src.p_ + kNodeHeaderSize + 8 * size_t{from},
                    8 * size_t{count});
        std::memcpy(val(to), src.val(from), size_t{vsize()} * count);
    }
    // Move entries [from, nr) to start at to (within this node, overlapping allowed).
    void shift(uint32_t from, uint32_t to) {
        uint32_t count = nr() - from;
        uint8_t* keys = p_ + kNodeHeaderSize;
        std::memmove(keys + 8 * size_t{to}, keys + 8 * size_t{from}, 8 * size_t{count});
        std::memmove(val(to), val(from), size_t{vsize()} * count);
    }

    void init(bool leaf, uint32_t value_size) {
        store32(p_ + 4, leaf ? kLeafNode : kInternalNode);
        set_nr(0);
        store32(p_ + 20, node_max_entries(value_size));
        store32(p_ + 24, value_size);
    }
    void init_like(const Node& other) {
        store32(p_ + 4, load32(other.p_ + 4));
        set_nr(0);
        store32(p_ + 20, other.max());
        store32(p_ + 24, other.vsize());
    }

private:
    uint8_t* p_;
};

// Even out two adjacent siblings (left then right).
void redistribute(Node left, Node right) {
    uint32_t l = left.nr(), r = right.nr(), want = (l + r) / 2;
    if (l > want) {
        uint32_t move = l - want;
        right.shift(0, move);
        right.copy_from(0, left, want, move);
        right.set_nr(r + move);
        left.set_nr(want);
    } else if (l < want) {
        uint32_t move = want - l;
        left.copy_from(l, right, 0, move);
        left.set_nr(want);
        right.shift(move, 0);
        right.set_nr(r - move);
    }
}

}  // namespace

uint32_t node_max_entries(uint32_t value_size) {
    uint32_t n = (kBlockSize - kNodeHeaderSize) / (8 + value_size);
    return n / 3 * 3;
}

uint64_t Btree::create_empty() {
    uint8_t* p;
    uint64_t b = tm_.new_block(BlockKind::node, &p);
    Node(p).init(true, vsize_);
    return b;
}

bool Btree::lookup(uint64_t root, uint64_t key, uint8_t* value) const {
    uint64_t b = root;
    for (;;) {
        Node n(tm_.read(b, BlockKind::node));
        if (n.leaf()) {
            uint32_t i = n.lower_bound(key);
            if (i >= n.nr() || n.key(i) != key) return false;
            if (value) std::memcpy(value, n.val(i), vsize_);
            return true;
        }
        int i = n.child_index(key);
        if (i < 0) return false;
        b = n.child(static_cast<uint32_t>(i));
    }
}

void Btree::inc_children(const uint8_t* node) {
    Node n(node);
    if (!n.leaf()) {
        for (uint32_t i = 0; i < n.nr(); i++) tm_.inc(n.child(i));
    } else if (refs_) {
        for (uint32_t i = 0; i < n.nr(); i++) refs_->inc(n.val(i));
    }
}

uint8_t* Btree::shadow_node(uint64_t* b) {
    uint8_t* p;
    bool shared;
    *b = tm_.shadow(*b, BlockKind::node, &p, &shared);
    if (shared) inc_children(p);
    return p;
}

uint8_t* Btree::shadow_child(uint8_t* parent, uint32_t i) {
    Node n(parent);
    uint64_t b = n.child(i);
    uint8_t* p = shadow_node(&b);
    n.set_child(i, b);
    return p;
}

// Child i of parent is full: move entries into a sibling with room, else split it in two.
void Btree::make_room(uint8_t* parent, uint32_t i) {
    Node n(parent);
    Node c(tm_.read(n.child(i), BlockKind::node));
    uint32_t roomy = c.max() - c.max() / 4;
    if (i > 0 && Node(tm_.read(n.child(i - 1), BlockKind::node)).nr() <= roomy) {
        Node left(shadow_child(parent, i - 1));
        Node cur(shadow_child(parent, i));
        redistribute(left, cur);
        n.set_key(i, cur.key(0));
        return;
    }
    if (i + 1 < n.nr() && Node(tm_.read(n.child(i + 1), BlockKind::node)).nr() <= roomy) {
        Node cur(shadow_child(parent, i));
        Node right(shadow_child(parent, i + 1));
        redistribute(cur, right);
        n.set_key(i + 1, right.key(0));
        return;
    }
    Node cur(shadow_child(parent, i));
    uint8_t* sp;
    uint64_t s = tm_.new_block(BlockKind::node, &sp);
    Node sib(sp);
    sib.init_like(cur);
    uint32_t keep = cur.nr() / 2, move = cur.nr() - keep;
    sib.copy_from(0, cur, keep, move);
    sib.set_nr(move);
    cur.set_nr(keep);
    uint8_t ptr[8];
    store64(ptr, s);
    n.insert_at(i + 1, sib.key(0), ptr);
}

uint64_t Btree::insert(uint64_t root, uint64_t key, const uint8_t* value, bool* inserted,
                       bool release_old) {
    uint64_t r = root;
    uint8_t* p = shadow_node(&r);
    if (Node(p).nr() == Node(p).max()) {
        // Grow a level: a new root above the full one, which is then split.
        uint8_t* np;
        uint64_t nb = tm_.new_block(BlockKind::node, &np);
        Node top(np);
        top.init(false, 8);
        uint8_t ptr[8];
        store64(ptr, r);
        top.insert_at(0, Node(p).key(0), ptr);
        r = nb;
        p = np;
        make_room(p, 0);
    }
    for (;;) {
        Node n(p);
        if (n.leaf()) {
            uint32_t i = n.lower_bound(key);
            if (i < n.nr() && n.key(i) == key) {
                if (release_old && refs_ && std::memcmp(n.val(i), value, vsize_) != 0)
                    refs_->dec(n.val(i));
                std::memcpy(n.val(i), value, vsize_);
                if (inserted) *inserted = false;
            } else {
                n.insert_at(i, key, value);
                if (inserted) *inserted = true;
            }
            return r;
        }
        int i = n.child_index(key);
        if (i < 0) {
            n.set_key(0, key);  // the new key becomes the lowest bound of the first child
            i = 0;
        }
        uint8_t* c = shadow_child(p, static_cast<uint32_t>(i));
        if (Node(c).nr() == Node(c).max()) {
            make_room(p, static_cast<uint32_t>(i));
            i = n.child_index(key);
            c = shadow_child(p, static_cast<uint32_t>(i));
        }
        p = c;
    }
}

uint64_t Btree::remove(uint64_t root, uint64_t key, bool* removed, uint8_t* old_value,
                       bool release) {
    std::vector<uint8_t> tmp(vsize_);
    if (!lookup(root, key, tmp.data())) {
        if (removed) *removed = false;
        return root;
    }
    uint64_t r = root;
    uint8_t* p = shadow_node(&r);
    remove_below(p, key, old_value, release);
    // An internal root left with one child hands the tree to that child.
    for (;;) {
        Node n(p);
        if (n.leaf() || n.nr() != 1) break;
        uint64_t child = n.child(0);
        tm_.dec(r);
        r = child;
        p = const_cast<uint8_t*>(tm_.read(r, BlockKind::node));
    }
    if (removed) *removed = true;
    return r;
}

void Btree::remove_below(uint8_t* node, uint64_t key, uint8_t* old_value, bool release) {
    Node n(node);
    if (n.leaf()) {
        uint32_t i = n.lower_bound(key);
        if (old_value) std::memcpy(old_value, n.val(i), vsize_);
        if (release && refs_) refs_->dec(n.val(i));
        n.erase_at(i);
        return;
    }
    uint32_t i = static_cast<uint32_t>(n.child_index(key));
    uint8_t* c = shadow_child(node, i);
    remove_below(c, key, old_value, release);
    Node cn(c);
    if (cn.nr() < cn.max() / 3) fix_underflow(node, i);
}

// Child i of parent has too few entries: merge it with a sibling, or take some of its entries.
void Btree::fix_underflow(uint8_t* parent, uint32_t i) {
    Node n(parent);
    if (n.nr() < 2) return;  // the root collapses onto its only child instead
    uint32_t li = i + 1 < n.nr() ? i : i - 1, ri = li + 1;
    Node left(shadow_child(parent, li));
    Node right(shadow_child(parent, ri));
    if (left.nr() + right.nr() <= left.max()) {
        left.copy_from(left.nr(), right, 0, right.nr());
        left.set_nr(left.nr() + right.nr());
        uint64_t rb = n.child(ri);
        n.erase_at(ri);
        tm_.dec(rb);  // its entries (and their references) now live in left
    } else {
        redistribute(left, right);
        n.set_key(ri, right.key(0));
    }
}

void Btree::del(uint64_t root) {
    if (tm_.ref_count(root) > 1) {
        tm_.dec(root);
        return;
    }
    Node n(tm_.read(root, BlockKind::node));
    if (!n.leaf()) {
        std::vector<uint64_t> children(n.nr());
        for (uint32_t i = 0; i < n.nr(); i++) children[i] = n.child(i);
        for (uint64_t c : children) del(c);
    } else if (refs_) {
        for (uint32_t i = 0; i < n.nr(); i++) refs_->dec(n.val(i));
    }
    tm_.dec(root);
}

void Btree::walk(uint64_t root, const Visit& fn) const {
    walk_range_at(root, 0, std::nullopt, fn);
}

void Btree::walk_range(uint64_t root, uint64_t lo, uint64_t hi, const Visit& fn) const {
    if (lo < hi) walk_range_at(root, lo, hi, fn);
}

void Btree::walk_range_at(uint64_t b, uint64_t lo, std::optional<uint64_t> hi,
                          const Visit& fn) const {
    Node n(tm_.read(b, BlockKind::node));
    auto below_hi = [&](uint32_t i) { return !hi || n.key(i) < *hi; };
    if (n.leaf()) {
        for (uint32_t i = n.lower_bound(lo); i < n.nr() && below_hi(i); i++) fn(n.key(i), n.val(i));
        return;
    }
    int start = n.child_index(lo);
    for (uint32_t i = start < 0 ? 0 : static_cast<uint32_t>(start); i < n.nr() && below_hi(i); i++)
        walk_range_at(n.child(i), lo, hi, fn);
}

bool Btree::highest_key(uint64_t root, uint64_t* key) const {
    uint64_t b = root;
    for (;;) {
        Node n(tm_.read(b, BlockKind::node));
        if (n.nr() == 0) return false;
        if (n.leaf()) {
            *key = n.key(n.nr() - 1);
            return true;
        }
        b = n.child(n.nr() - 1);
    }
}

void Btree::walk_nodes(uint64_t root, const std::function<void(uint64_t)>& fn) const {
    fn(root);
    Node n(tm_.read(root, BlockKind::node));
    if (n.leaf()) return;
    for (uint32_t i = 0; i < n.nr(); i++) walk_nodes(n.child(i), fn);
}

}  // namespace sk::thin
