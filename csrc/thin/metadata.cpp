#include "thin/metadata.hpp"

#include <cerrno>
#include <cstring>

#include "common/syserror.hpp"
#include "thin/error.hpp"
#include "thin/space_map_disk.hpp"

namespace sk::thin {

// Bottom-level leaf values hold a reference to their data block.
class Metadata::DataRefs : public LeafRefs {
public:
    explicit DataRefs(SpaceMap& sm) : sm_(sm) {}
    void inc(const uint8_t* v) override { sm_.inc(unpack_block(load64(v))); }
    void dec(const uint8_t* v) override {
        uint64_t b = unpack_block(load64(v));
        if (sm_.dec(b) == 0) freed.push_back(b);
    }
    std::vector<uint64_t> freed;

private:
    SpaceMap& sm_;
};

// Top-level leaf values hold a reference to a device's mapping tree.
class Metadata::SubtreeRefs : public LeafRefs {
public:
    SubtreeRefs(Transaction& tm, Btree& bottom) : tm_(tm), bottom_(bottom) {}
    void inc(const uint8_t* v) override { tm_.inc(load64(v)); }
    void dec(const uint8_t* v) override { bottom_.del(load64(v)); }

private:
    Transaction& tm_;
    Btree& bottom_;
};

namespace {

void encode_details(const DeviceInfo& d, uint8_t* v) {
    store64(v, d.mapped_blocks);
    store64(v + 8, d.transaction_id);
    store32(v + 16, d.creation_time);
    store32(v + 20, d.snapshotted_time);
}

DeviceInfo decode_details(const uint8_t* v) {
    DeviceInfo d;
    d.mapped_blocks = load64(v);
    d.transaction_id = load64(v + 8);
    d.creation_time = load32(v + 16);
    d.snapshotted_time = load32(v + 20);
    return d;
}

[[noreturn]] void bad_superblock(const std::string& path, const std::string& why) {
    throw ValueErr(path + ": not usable as thin-pool metadata: " + why);
}


}  // namespace

Metadata::Metadata(const std::string& path, bool read_only, size_t cache_blocks,
                   uint64_t meta_blocks, uint64_t data_blocks)
    : file_(path, read_only),
      cache_(file_, cache_blocks),
      meta_sm_(meta_blocks),
      data_sm_(data_blocks),
      tm_(cache_, meta_sm_, file_.path()),
      data_refs_(std::make_unique<DataRefs>(data_sm_)),
      subtree_refs_(std::make_unique<SubtreeRefs>(tm_, bottom_)),
      bottom_(tm_, 8, data_refs_.get()),
      top_(tm_, 8, subtree_refs_.get()),
      details_(tm_, kDeviceDetailsSize) {}

Metadata::~Metadata() = default;

std::unique_ptr<Metadata> Metadata::format(const std::string& path, uint32_t data_block_sectors,
                                           uint64_t nr_data_blocks, size_t cache_blocks) {
    uint64_t meta_blocks;
    {
        MetaFile probe(path, false);
        meta_blocks = std::min(probe.size_bytes() / kBlockSize, kMaxMetadataBlocks);
        if (meta_blocks < 64)
            throw ValueErr(path + ": metadata device too small (need at least 256 KiB)");
        BlockBuf zero = alloc_block_buf();
        std::memset(zero.get(), 0, kBlockSize);
        probe.write_block(kSuperblockLocation, zero.get());
        probe.sync();
    }
    std::unique_ptr<Metadata> md(
        new Metadata(path, false, cache_blocks, meta_blocks, nr_data_blocks));
    md->data_block_sectors_ = data_block_sectors;
    md->meta_sm_.set(kSuperblockLocation, 1);
    create_metadata_sm(md->tm_, md->meta_sm_);
    create_data_sm(md->tm_, md->data_sm_);
    md->mapping_root_ = md->top_.create_empty();
    md->details_root_ = md->details_.create_empty();
    md->touch();
    md->commit();
    return md;
}

std::unique_ptr<Metadata> Metadata::open(const std::string& path, bool read_only,
                                         size_t cache_blocks) {
    BlockBuf sb = alloc_block_buf();
    uint64_t file_blocks;
    {
        MetaFile probe(path, true);
        file_blocks = probe.size_bytes() / kBlockSize;
        if (file_blocks == 0) bad_superblock(path, "the device is empty");
        probe.read_block(kSuperblockLocation, sb.get());
    }
    const uint8_t* p = sb.get();
    if (load64(p + sb::magic) != kSuperblockMagic)
        bad_superblock(path, "no dm-thin superblock (bad magic)");
    if (load32(p + sb::csum) != block_checksum(p, BlockKind::superblock))
        bad_superblock(path, "superblock checksum mismatch");
    if (load64(p + sb::blocknr) != kSuperblockLocation)
        bad_superblock(path, "superblock block number mismatch");
    uint32_t version = load32(p + sb::version);
    if (version < 1 || version > kMetadataVersion)
        bad_superblock(path, "unsupported metadata version " + std::to_string(version));
    if (load32(p + sb::metadata_block_size) != kSectorsPerMetaBlock)
        bad_superblock(path, "metadata block size is not 4 KiB");
    uint32_t dbs = load32(p + sb::data_block_size);
    if (dbs < kMinDataBlockSectors || dbs > kMaxDataBlockSectors || dbs % kMinDataBlockSectors)
        bad_superblock(path, "bad data block size " + std::to_string(dbs));
    if (load32(p + sb::incompat_flags) != 0)
        bad_superblock(path, "unknown incompatible features");
    SmRoot meta_root = SmRoot::decode(p + sb::metadata_sm_root);
    SmRoot data_root = SmRoot::decode(p + sb::data_sm_root);
    if (meta_root.nr_blocks == 0 || meta_root.nr_blocks > file_blocks ||
        meta_root.nr_blocks > kMaxMetadataBlocks)
        bad_superblock(path, "metadata space map does not fit the device");
    if (data_root.nr_blocks == 0) bad_superblock(path, "no data blocks");

    std::unique_ptr<Metadata> md(
        new Metadata(path, read_only, cache_blocks, meta_root.nr_blocks, data_root.nr_blocks));
    md->load(p);
    return md;
}

void Metadata::load(const uint8_t* p) {
    flags_ = load32(p + sb::flags);
    std::memcpy(uuid_, p + sb::uuid, 16);
    version_ = load32(p + sb::version);
    time_ = load32(p + sb::time);
    trans_id_ = load64(p + sb::trans_id);
    held_root_ = load64(p + sb::held_root);
    mapping_root_ = load64(p + sb::data_mapping_root);
    details_root_ = load64(p + sb::device_details_root);
    data_block_sectors_ = load32(p + sb::data_block_size);
    load_metadata_sm(tm_, SmRoot::decode(p + sb::metadata_sm_root), meta_sm_);
    load_data_sm(tm_, SmRoot::decode(p + sb::data_sm_root), data_sm_);
    details_.walk(details_root_, [&](uint64_t id, const uint8_t* v) {
        devices_[static_cast<uint32_t>(id)] = decode_details(v);
    });
    committed_sb_.assign(p, p + kBlockSize);
    written_at_commit_ = cache_.blocks_written();
}

void Metadata::require_writable() const {
    if (file_.read_only())
        throw Error(Fault::read_only, "the pool's metadata is read-only", file_.path());
}

const DeviceInfo* Metadata::device(uint32_t id) const {
    auto it = devices_.find(id);
    return it == devices_.end() ? nullptr : &it->second;
}

Error Metadata::no_mapping_tree(uint32_t dev) const {
    return Error(Fault::damaged, "device " + std::to_string(dev) + " has no mapping tree",
                 file_.path());
}

uint64_t Metadata::root_of(uint32_t dev) {
    auto it = private_roots_.find(dev);
    if (it != private_roots_.end()) return it->second;
    uint8_t v[8];
    if (!top_.lookup(mapping_root_, dev, v)) throw no_mapping_tree(dev);
    return load64(v);
}

// The top-level path to dev is shadowed before dev's own tree is touched: were that path shared
// (a held metadata snapshot), shadowing it later would count the old subtree root as
// referenced by the new path after the subtree had already released it.
uint64_t Metadata::private_root(uint32_t dev) {
    auto it = private_roots_.find(dev);
    if (it != private_roots_.end()) return it->second;
    uint8_t v[8];
    if (!top_.lookup(mapping_root_, dev, v)) throw no_mapping_tree(dev);
    mapping_root_ = top_.insert(mapping_root_, dev, v, nullptr, false);
    uint64_t root = load64(v);
    private_roots_[dev] = root;
    return root;
}

void Metadata::set_root(uint32_t dev, uint64_t root) {
    uint64_t& cur = private_roots_[dev];
    if (cur == root) return;
    uint8_t v[8];
    store64(v, root);
    mapping_root_ = top_.insert(mapping_root_, dev, v, nullptr, false);
    cur = root;
}

void Metadata::require_new_id(uint32_t id) const {
    if (id > kMaxDeviceId)
        throw Error(Fault::bad_message, std::to_string(id) + " is not a thin device id (0.." +
                                            std::to_string(kMaxDeviceId) + ")");
    if (devices_.count(id))
        throw Error(Fault::device_exists, "thin device " + std::to_string(id) + " already exists");
}

void Metadata::create_thin(uint32_t id) {
    require_writable();
    require_new_id(id);
    touch();
    uint64_t root = bottom_.create_empty();
    uint8_t v[8];
    store64(v, root);
    mapping_root_ = top_.insert(mapping_root_, id, v);
    DeviceInfo d;
    d.transaction_id = trans_id_;
    d.creation_time = time_;
    d.snapshotted_time = time_;
    d.changed = true;
    devices_[id] = d;
    private_roots_[id] = root;
}

void Metadata::create_snap(uint32_t id, uint32_t origin) {
    require_writable();
    require_new_id(id);
    auto o = devices_.find(origin);
    if (o == devices_.end())
        throw Error(Fault::no_origin, "the origin device does not exist (thin device " +
                                          std::to_string(origin) + ")");
    touch();
    // Sharing the origin's whole tree is one more reference to its root.
    uint64_t root = root_of(origin);
    tm_.inc(root);
    uint8_t v[8];
    store64(v, root);
    mapping_root_ = top_.insert(mapping_root_, id, v);
    time_++;
    DeviceInfo d;
    d.mapped_blocks = o->second.mapped_blocks;
    d.transaction_id = trans_id_;
    d.creation_time = time_;
    d.snapshotted_time = time_;
    d.changed = true;
    o->second.snapshotted_time = time_;
    o->second.changed = true;
    devices_[id] = d;
}

void Metadata::delete_device(uint32_t id) {
    require_writable();
    if (!devices_.count(id))
        throw Error(Fault::no_device, "no such thin device: " + std::to_string(id));
    touch();
    mapping_root_ = top_.remove(mapping_root_, id);  // releases the device's tree
    details_root_ = details_.remove(details_root_, id);
    devices_.erase(id);
    private_roots_.erase(id);
}

std::optional<Mapping> Metadata::find(uint32_t dev, uint64_t vblock) {
    uint8_t v[8];
    if (!bottom_.lookup(root_of(dev), vblock, v)) return std::nullopt;
    uint64_t bt = load64(v);
    return Mapping{unpack_block(bt), unpack_time(bt)};
}

void Metadata::find_range(uint32_t dev, uint64_t lo, uint64_t hi,
                          const std::function<void(uint64_t, Mapping)>& fn) {
    bottom_.walk_range(root_of(dev), lo, hi, [&](uint64_t k, const uint8_t* v) {
        uint64_t bt = load64(v);
        fn(k, Mapping{unpack_block(bt), unpack_time(bt)});
    });
}

void Metadata::walk_mappings(uint32_t dev, const std::function<void(uint64_t, Mapping)>& fn) {
    bottom_.walk(root_of(dev), [&](uint64_t k, const uint8_t* v) {
        uint64_t bt = load64(v);
        fn(k, Mapping{unpack_block(bt), unpack_time(bt)});
    });
}

uint64_t Metadata::mapping_tree_nodes(uint32_t dev) {
    uint64_t n = 0;
    bottom_.walk_nodes(root_of(dev), [&](uint64_t) { n++; });
    return n;
}

bool Metadata::insert(uint32_t dev, uint64_t vblock, uint64_t data_block) {
    require_writable();
    touch();
    uint64_t root = private_root(dev);
    uint8_t v[8];
    store64(v, pack_block_time(data_block, time_));
    bool inserted = false;
    set_root(dev, bottom_.insert(root, vblock, v, &inserted));
    DeviceInfo& d = devices_.at(dev);
    if (inserted) d.mapped_blocks++;
    d.changed = true;
    return inserted;
}

bool Metadata::remove(uint32_t dev, uint64_t vblock) {
    require_writable();
    uint8_t v[8];
    if (!bottom_.lookup(root_of(dev), vblock, v)) return false;
    touch();
    uint64_t root = private_root(dev);
    bool removed = false;
    set_root(dev, bottom_.remove(root, vblock, &removed));
    DeviceInfo& d = devices_.at(dev);
    if (removed) d.mapped_blocks--;
    d.changed = true;
    return removed;
}

bool Metadata::maybe_shared(uint32_t dev, const Mapping& m) const {
    // Mapping times keep only 24 bits of the pool's time.
    return (devices_.at(dev).snapshotted_time & ((1u << kTimeBits) - 1)) > m.time;
}

std::optional<uint64_t> Metadata::highest_mapped(uint32_t dev) {
    uint64_t k;
    if (!bottom_.highest_key(root_of(dev), &k)) return std::nullopt;
    return k;
}

std::optional<uint64_t> Metadata::alloc_data_block() {
    require_writable();
    auto b = data_sm_.alloc();
    if (b) touch();
    return b;
}

void Metadata::extend_data(uint64_t nr_blocks) {
    require_writable();
    if (nr_blocks <= data_sm_.nr_blocks()) return;
    touch();
    data_sm_.extend(nr_blocks);
}

std::vector<uint64_t> Metadata::take_freed_data_blocks() {
    std::vector<uint64_t> out;
    out.swap(data_refs_->freed);
    return out;
}

void Metadata::set_transaction_id(uint64_t current, uint64_t next) {
    require_writable();
    if (current != trans_id_)
        throw Error(Fault::bad_argument, "the current id is " + std::to_string(trans_id_) +
                                             ", not " + std::to_string(current));
    touch();
    trans_id_ = next;
}

void Metadata::reserve_metadata_snap(const std::function<void()>& before_superblock) {
    require_writable();
    if (held_root_) throw Error(Fault::busy, "a metadata snapshot is held already");
    // The copy must describe trees that are complete on disk.
    commit(before_superblock);
    uint8_t* p;
    uint64_t copy = tm_.new_block(BlockKind::superblock, &p);
    std::memcpy(p, committed_sb_.data(), kBlockSize);
    std::memset(p + sb::data_sm_root, 0, kSpaceMapRootSize);
    std::memset(p + sb::metadata_sm_root, 0, kSpaceMapRootSize);
    store64(p + sb::held_root, 0);
    tm_.inc(mapping_root_);
    tm_.inc(details_root_);
    held_root_ = copy;
    private_roots_.clear();  // the top-level tree is shared now
    touch();
}

void Metadata::release_metadata_snap() {
    require_writable();
    if (!held_root_) throw Error(Fault::bad_argument, "no metadata snapshot is held");
    touch();
    const uint8_t* p = tm_.read(held_root_, BlockKind::superblock);
    uint64_t mroot = load64(p + sb::data_mapping_root), droot = load64(p + sb::device_details_root);
    top_.del(mroot);
    details_.del(droot);
    tm_.dec(held_root_);
    held_root_ = 0;
}

void Metadata::write_details() {
    for (auto& [id, d] : devices_) {
        if (!d.changed) continue;
        uint8_t v[kDeviceDetailsSize];
        encode_details(d, v);
        details_root_ = details_.insert(details_root_, id, v);
        d.changed = false;
    }
}

void Metadata::build_superblock(uint8_t* p) const {
    std::memset(p, 0, kBlockSize);
    store32(p + sb::flags, flags_);
    std::memcpy(p + sb::uuid, uuid_, 16);
    store64(p + sb::magic, kSuperblockMagic);
    store32(p + sb::version, version_);
    store32(p + sb::time, time_);
    store64(p + sb::trans_id, trans_id_);
    store64(p + sb::held_root, held_root_);
    sm_root(data_sm_).encode(p + sb::data_sm_root);
    sm_root(meta_sm_).encode(p + sb::metadata_sm_root);
    store64(p + sb::data_mapping_root, mapping_root_);
    store64(p + sb::device_details_root, details_root_);
    store32(p + sb::data_block_size, data_block_sectors_);
    store32(p + sb::metadata_block_size, kSectorsPerMetaBlock);
    store64(p + sb::metadata_nr_blocks, meta_sm_.nr_blocks());
    seal_block(p, kSuperblockLocation, BlockKind::superblock);
}

void Metadata::commit(const std::function<void()>& before_superblock) {
    if (!changed_) return;
    require_writable();
    write_details();
    save_data_sm(tm_, data_sm_);
    save_metadata_sm(tm_, meta_sm_);
    cache_.flush();
    file_.sync();
    if (before_superblock) before_superblock();
    BlockBuf sb = alloc_block_buf();
    build_superblock(sb.get());
    file_.write_block(kSuperblockLocation, sb.get());
    file_.sync();
    committed_sb_.assign(sb.get(), sb.get() + kBlockSize);

    meta_sm_.mark_committed();
    data_sm_.mark_committed();
    tm_.begin_next();
    private_roots_.clear();
    changed_ = false;
    commits_++;
    last_commit_blocks_ = cache_.blocks_written() - written_at_commit_ + 1;
    written_at_commit_ = cache_.blocks_written();
}

void Metadata::set_needs_check() {
    if (file_.read_only() || committed_sb_.empty()) {
        flags_ |= kNeedsCheckFlag;
        return;
    }
    flags_ |= kNeedsCheckFlag;
    BlockBuf sb = alloc_block_buf();
    std::memcpy(sb.get(), committed_sb_.data(), kBlockSize);
    store32(sb.get() + sb::flags, load32(sb.get() + sb::flags) | kNeedsCheckFlag);
    seal_block(sb.get(), kSuperblockLocation, BlockKind::superblock);
    file_.write_block(kSuperblockLocation, sb.get());
    file_.sync();
    committed_sb_.assign(sb.get(), sb.get() + kBlockSize);
}

}  // namespace sk::thin
