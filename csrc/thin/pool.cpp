// The pool's operations (pool.hpp), in one file past the usual size: they share one locking
// protocol (mu_, the pins of I/O in flight, the wait for space), easier to check read whole.
#include "thin/pool.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/syserror.hpp"
#include "thin/error.hpp"
#include "thin/message.hpp"

namespace sk::thin {
namespace {

void check_range(uint64_t offset, uint64_t len) {
    if (offset + len < offset) throw Error(Fault::bad_argument, "offset + length overflows");
}

// A write that needs a new data block while the pool has none (caught to wait for space).
struct NoDataSpace : Error {
    explicit NoDataSpace(const std::string& data_path)
        : Error(Fault::no_space, "the pool is out of data space", data_path) {}
};

void check_data_block_size(uint32_t sectors) {
    if (sectors < kMinDataBlockSectors || sectors > kMaxDataBlockSectors ||
        sectors % kMinDataBlockSectors != 0)
        throw ValueErr("data_block_size must be a multiple of 128 sectors between 128 (64 KiB) "
                       "and 2097152 (1 GiB), not " + std::to_string(sectors));
}

// Create (or resize) a regular file for create(); block devices are used as they are. The
// metadata file is allocated up front: a commit must not fail because the filesystem under
// it filled up. The data file stays sparse (the host filesystem is thin too).
void prepare_file(const std::string& path, uint64_t size, bool allocate) {
    if (size == 0) return;
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) throw_errno(path);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) throw_errno(path);
    if (!S_ISREG(st.st_mode)) return;
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) throw_errno(path);
    if (allocate) {
        int err = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(size));
        if (err != 0 && err != EOPNOTSUPP && err != EINVAL) throw SysError(err, path);
    }
}

}  // namespace

Pool::Pool(const std::string& metadata_path, const std::string& data_path, const PoolOptions& opts)
    : meta_path_(metadata_path), data_path_(data_path), opts_(opts) {
    if (opts_.commit_interval < 0) throw ValueErr("commit_interval must not be negative");
    if (!(opts_.no_space_timeout >= 0)) throw ValueErr("no_space_timeout must not be negative");
    // Tests widen the window between looking blocks up and doing their I/O (see pool.hpp).
    if (const char* e = std::getenv("STORAGEKIT_THIN_TEST_IO_DELAY_US")) io_delay_us_ = std::atoi(e);
    if (opts_.cache_blocks < 64) opts_.cache_blocks = 64;
}

void Pool::lock_metadata() {
    lock_fd_.reset(::open(meta_path_.c_str(), O_RDONLY | O_CLOEXEC));
    if (!lock_fd_) throw_errno(meta_path_);
    if (::flock(lock_fd_.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            throw Error(Fault::locked, "another process has the pool open (its metadata is locked)",
                        meta_path_);
        throw_errno(meta_path_);
    }
}

std::unique_ptr<Pool> Pool::create(const std::string& metadata_path, const std::string& data_path,
                                   const PoolOptions& opts) {
    check_data_block_size(opts.data_block_sectors);
    if (opts.read_only) throw ValueErr("a pool cannot be created read-only");
    prepare_file(metadata_path, opts.metadata_size, true);
    prepare_file(data_path, opts.data_size, false);
    std::unique_ptr<Pool> p(new Pool(metadata_path, data_path, opts));
    p->lock_metadata();
    p->data_ = std::make_unique<DataFile>(data_path, false);
    p->block_bytes_ = uint64_t{opts.data_block_sectors} * 512;
    uint64_t nr_data = p->data_->size_bytes() / p->block_bytes_;
    if (nr_data == 0)
        throw ValueErr(data_path + ": data device is smaller than one data block");
    if (nr_data > (uint64_t{1} << 40)) throw ValueErr(data_path + ": data device too large");
    p->md_ = Metadata::format(metadata_path, opts.data_block_sectors, nr_data, opts.cache_blocks);
    p->start();
    return p;
}

std::unique_ptr<Pool> Pool::open(const std::string& metadata_path, const std::string& data_path,
                                 const PoolOptions& opts) {
    std::unique_ptr<Pool> p(new Pool(metadata_path, data_path, opts));
    p->lock_metadata();
    p->md_ = Metadata::open(metadata_path, opts.read_only, opts.cache_blocks);
    if (p->md_->needs_check() && !opts.read_only)  // as the kernel does: read-only until checked
        p->md_ = Metadata::open(metadata_path, true, opts.cache_blocks);
    bool ro = opts.read_only || p->md_->needs_check();
    p->data_ = std::make_unique<DataFile>(data_path, ro);
    p->block_bytes_ = uint64_t{p->md_->data_block_sectors()} * 512;
    uint64_t nr_data = p->data_->size_bytes() / p->block_bytes_;
    if (nr_data < p->md_->data_nr_blocks())
        throw ValueErr(data_path + ": data device too small: the pool has " +
                       std::to_string(p->md_->data_nr_blocks()) + " data blocks, the device " +
                       std::to_string(nr_data));
    if (ro) {
        p->mode_ = Mode::read_only;
    } else if (nr_data > p->md_->data_nr_blocks()) {
        p->md_->extend_data(std::min<uint64_t>(nr_data, uint64_t{1} << 40));
        p->md_->commit();
    }
    p->start();
    return p;
}

void Pool::start() {
    uint64_t meta = md_->meta_nr_blocks();
    max_txn_blocks_ = opts_.max_transaction_blocks
                          ? opts_.max_transaction_blocks
                          : std::clamp<uint64_t>(meta / 8, 16, 4096);
    if (mode_ != Mode::read_only && opts_.commit_interval > 0)
        committer_ = std::thread([this] { committer(); });
}

Pool::~Pool() {
    try {
        close();
    } catch (...) {
        // A destructor cannot report; close() explicitly to see errors.
    }
}

bool Pool::closed() const {
    std::lock_guard lk(mu_);
    return !md_;
}

void Pool::close() {
    {
        std::lock_guard lk(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (committer_.joinable()) committer_.join();
    std::lock_guard lk(mu_);
    if (!md_) return;
    drain_io();
    std::exception_ptr err;
    try {
        if (mode_ != Mode::read_only) commit_locked();
    } catch (...) {
        err = std::current_exception();
    }
    md_.reset();
    data_.reset();
    lock_fd_.reset();
    space_cv_.notify_all();  // queued writes see the pool closed
    if (err) std::rethrow_exception(err);
}

void Pool::require_open() const {
    if (!md_) throw Error(Fault::closed, "the pool is closed", meta_path_);
}

void Pool::require_device(uint32_t dev) const {
    require_open();
    if (!md_->device(dev))
        throw Error(Fault::no_device, "no such thin device: " + std::to_string(dev));
}

void Pool::require_writable() const {
    if (mode_ == Mode::read_only)
        throw Error(Fault::read_only, "the pool is read-only", meta_path_);
}

// A change that fails half-way leaves the open transaction inconsistent: drop it and go back
// to the last commit, marked as needing a check, read-only (what dm-thin does when a metadata
// operation fails). Failures before anything changed (bad id, device exists, ...) need none.
template <typename Fn>
void Pool::mutate(Fn&& fn) {
    safe_point();
    try {
        fn();
        after_operation();
    } catch (...) {
        if (md_ && md_->mutations() != safe_point_) abort_transaction();
        throw;
    }
}

void Pool::pin_io() {
    std::lock_guard lk(io_mu_);
    io_pins_++;
}

void Pool::io_delay() const {
    if (io_delay_us_ > 0) std::this_thread::sleep_for(std::chrono::microseconds(io_delay_us_));
}

void Pool::unpin_io() {
    std::lock_guard lk(io_mu_);
    if (--io_pins_ == 0) io_cv_.notify_all();
}

// Called with mu_ held: no new pins can be taken meanwhile, and unpinning needs only io_mu_.
void Pool::drain_io() {
    std::unique_lock lk(io_mu_);
    io_cv_.wait(lk, [&] { return io_pins_ == 0; });
}

void Pool::abort_transaction() {
    // Blocks mapped only in this transaction become free again: no reader may be on them.
    drain_io();
    md_.reset();
    md_ = Metadata::open(meta_path_, false, opts_.cache_blocks);
    md_->set_needs_check();
    mode_ = Mode::read_only;
    txn_open_ = false;
}

void Pool::commit_locked() {
    if (!md_->changed()) return;
    md_->commit([this] { data_->sync(); });
    txn_open_ = false;
    safe_point();
    if (!opts_.ignore_discard && !opts_.no_discard_passdown) {
        for (uint64_t b : md_->take_freed_data_blocks())
            if (md_->data_ref_count(b) == 0) data_->discard(b * block_bytes_, block_bytes_);
    } else {
        md_->take_freed_data_blocks();
    }
}

void Pool::after_operation() {
    if (md_->changed() && !txn_open_) {
        txn_open_ = true;
        txn_start_ = std::chrono::steady_clock::now();
    }
    if (md_->changed() && md_->transaction_blocks() >= max_txn_blocks_) commit_locked();
    md_->end_operation();
}

void Pool::committer() {
    auto interval = std::chrono::duration<double>(opts_.commit_interval);
    auto tick = std::chrono::duration_cast<std::chrono::milliseconds>(interval / 4);
    if (tick < std::chrono::milliseconds(10)) tick = std::chrono::milliseconds(10);
    std::unique_lock lk(mu_);
    while (!stopping_) {
        cv_.wait_for(lk, tick);
        if (stopping_ || !md_ || mode_ == Mode::read_only || !txn_open_) continue;
        if (std::chrono::steady_clock::now() - txn_start_ < interval) continue;
        try {
            commit_locked();
            md_->end_operation();
        } catch (...) {
            try {
                abort_transaction();
            } catch (...) {
                mode_ = Mode::read_only;
            }
        }
    }
}

void Pool::commit() {
    std::lock_guard lk(mu_);
    require_open();
    if (mode_ == Mode::read_only) return;
    mutate([&] { commit_locked(); });
}

void Pool::message(const std::string& msg) {
    Message m = parse_message(msg);
    std::lock_guard lk(mu_);
    require_open();
    require_writable();
    // A delete frees blocks that I/O in flight may be on; a snapshot shares blocks that a
    // write in flight may be writing in place.
    if (m.kind == Message::delete_device || m.kind == Message::create_snap) drain_io();
    mutate([&] {
        switch (m.kind) {
            case Message::create_thin: md_->create_thin(static_cast<uint32_t>(m.a)); break;
            case Message::create_snap:
                md_->create_snap(static_cast<uint32_t>(m.a), static_cast<uint32_t>(m.b));
                break;
            case Message::delete_device: md_->delete_device(static_cast<uint32_t>(m.a)); break;
            case Message::set_transaction_id: md_->set_transaction_id(m.a, m.b); break;
            case Message::reserve_metadata_snap:
                md_->reserve_metadata_snap([this] { data_->sync(); });
                break;
            case Message::release_metadata_snap: md_->release_metadata_snap(); break;
        }
    });
    if (m.kind == Message::delete_device) space_cv_.notify_all();
}

uint64_t Pool::alloc_data() {
    auto b = md_->alloc_data_block();
    if (!b && md_->data_nr_free() > 0) {
        // Blocks freed in this transaction become usable once it is committed.
        commit_locked();
        b = md_->alloc_data_block();
    }
    if (!b) {
        if (mode_ != Mode::out_of_data_space) no_space_since_ = std::chrono::steady_clock::now();
        mode_ = Mode::out_of_data_space;
        throw NoDataSpace(data_path_);
    }
    if (mode_ == Mode::out_of_data_space) mode_ = Mode::write;
    return *b;
}

void Pool::write_block(uint32_t dev, uint64_t vblock, uint64_t in_block, const uint8_t* buf,
                       size_t len) {
    auto m = md_->find(dev, vblock);
    if (m && !md_->maybe_shared(dev, *m)) {
        data_->write(m->data_block * block_bytes_ + in_block, buf, len);
        return;
    }
    uint64_t nb = alloc_data();
    uint64_t base = nb * block_bytes_;
    try {
        if (len != block_bytes_) {
            if (m)
                data_->copy(m->data_block * block_bytes_, base, block_bytes_);
            else if (!opts_.skip_block_zeroing)
                data_->zero(base, block_bytes_);
        }
        data_->write(base + in_block, buf, len);
    } catch (...) {
        // A failed data write (say, the filesystem under a sparse data file is full) leaves
        // the metadata as it was once the block is given back: no need to drop the transaction.
        md_->release_data_block(nb);
        safe_point();
        throw;
    }
    md_->insert(dev, vblock, nb);
}

void Pool::write(uint32_t dev, uint64_t offset, const uint8_t* buf, size_t len) {
    check_range(offset, len);
    std::unique_lock lk(mu_);
    require_device(dev);
    require_writable();
    if (len == 0) return;
    // When every block is mapped to this device alone, the data goes in place: outside mu_.
    uint64_t first = offset / block_bytes_, last = (offset + len - 1) / block_bytes_;
    std::vector<std::pair<uint64_t, uint64_t>> maps;  // vblock, data block
    bool in_place = true;
    md_->find_range(dev, first, last + 1, [&](uint64_t vb, Mapping m) {
        if (md_->maybe_shared(dev, m)) in_place = false;
        maps.emplace_back(vb, m.data_block);
    });
    md_->end_operation();
    if (in_place && maps.size() == last - first + 1) {
        pin_io();
        lk.unlock();
        try {
            io_delay();
            size_t i = 0;
            while (len) {
                uint64_t in_block = offset % block_bytes_;
                uint64_t end = std::min<uint64_t>(offset + len, (maps[i].first + 1) * block_bytes_);
                uint64_t db = maps[i].second;
                while (end < offset + len && maps[i + 1].second == maps[i].second + 1) {
                    i++;
                    end = std::min<uint64_t>(offset + len, (maps[i].first + 1) * block_bytes_);
                }
                i++;
                size_t n = static_cast<size_t>(end - offset);
                data_->write(db * block_bytes_ + in_block, buf, n);
                buf += n;
                offset += n;
                len -= n;
            }
        } catch (...) {
            unpin_io();
            throw;
        }
        unpin_io();
        return;
    }
    for (;;) {
        try {
            mutate([&] {
                while (len) {
                    uint64_t vblock = offset / block_bytes_, in_block = offset % block_bytes_;
                    size_t n = static_cast<size_t>(std::min<uint64_t>(len, block_bytes_ - in_block));
                    write_block(dev, vblock, in_block, buf, n);
                    safe_point();
                    buf += n;
                    offset += n;
                    len -= n;
                }
            });
            return;
        } catch (const NoDataSpace& e) {
            // The blocks before this one are written; this one waits for space, or fails.
            const Error& no_space = e;  // what the caller gets when the wait is over
            if (opts_.error_if_no_space) throw no_space;
            auto deadline = no_space_since_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                  std::chrono::duration<double>(opts_.no_space_timeout));
            if (std::chrono::steady_clock::now() >= deadline) throw no_space;
            uint64_t cancels = queue_cancels_;
            space_cv_.wait_until(lk, deadline);
            if (queue_cancels_ != cancels) throw no_space;
            require_device(dev);
            require_writable();
        }
    }
}

void Pool::fail_queued_writes() {
    {
        std::lock_guard lk(mu_);
        queue_cancels_++;
    }
    space_cv_.notify_all();
}

std::vector<ReadExtent> Pool::begin_read(uint32_t dev, uint64_t offset, size_t len) {
    check_range(offset, len);
    std::unique_lock lk(mu_);
    require_device(dev);
    std::vector<ReadExtent> out;
    if (len == 0) {
        pin_io();
        return out;
    }
    uint64_t first = offset / block_bytes_, last = (offset + len - 1) / block_bytes_;
    std::vector<std::pair<uint64_t, uint64_t>> maps;  // vblock, data block
    md_->find_range(dev, first, last + 1,
                    [&](uint64_t vb, Mapping m) { maps.emplace_back(vb, m.data_block); });
    md_->end_operation();
    size_t mi = 0;
    uint64_t pos = offset;
    while (pos < offset + len) {
        uint64_t vb = pos / block_bytes_, in_block = pos % block_bytes_;
        while (mi < maps.size() && maps[mi].first < vb) mi++;
        uint64_t end = std::min<uint64_t>(offset + len, (vb + 1) * block_bytes_);
        ReadExtent e;
        if (mi < maps.size() && maps[mi].first == vb) {
            // Extend the run while the next virtual blocks sit in the next data blocks.
            size_t j = mi;
            while (end < offset + len && j + 1 < maps.size() &&
                   maps[j + 1].first == maps[j].first + 1 && maps[j + 1].second == maps[j].second + 1) {
                j++;
                end = std::min<uint64_t>(offset + len, (maps[j].first + 1) * block_bytes_);
            }
            e.mapped = true;
            e.data_offset = maps[mi].second * block_bytes_ + in_block;
        }
        e.len = end - pos;
        if (!e.mapped && !out.empty() && !out.back().mapped)
            out.back().len += e.len;
        else
            out.push_back(e);
        pos = end;
    }
    // The data blocks stay the device's while pinned: the I/O needs no lock.
    pin_io();
    lk.unlock();
    io_delay();
    return out;
}

void Pool::read(uint32_t dev, uint64_t offset, uint8_t* buf, size_t len) {
    auto extents = begin_read(dev, offset, len);
    struct End {
        Pool* p;
        ~End() { p->end_read(); }
    } end{this};
    for (const ReadExtent& e : extents) {
        if (e.mapped)
            data_->read(e.data_offset, buf, static_cast<size_t>(e.len));
        else
            std::memset(buf, 0, static_cast<size_t>(e.len));
        buf += e.len;
    }
}

void Pool::discard(uint32_t dev, uint64_t offset, uint64_t len) {
    check_range(offset, len);
    std::lock_guard lk(mu_);
    require_device(dev);
    require_writable();
    if (opts_.ignore_discard) return;
    // Only whole data blocks are unmapped.
    uint64_t first = (offset + block_bytes_ - 1) / block_bytes_, end = (offset + len) / block_bytes_;
    if (first >= end) return;
    bool freed = false;
    mutate([&] {
        std::vector<uint64_t> mapped;
        md_->find_range(dev, first, end, [&](uint64_t vb, Mapping) { mapped.push_back(vb); });
        if (!mapped.empty()) drain_io();  // I/O in flight may be on these blocks
        for (uint64_t vb : mapped) {
            md_->remove(dev, vb);
            safe_point();
            freed = true;
        }
    });
    if (freed) space_cv_.notify_all();
}

std::vector<uint32_t> Pool::devices() {
    std::lock_guard lk(mu_);
    require_open();
    std::vector<uint32_t> out;
    for (auto& [id, d] : md_->devices()) out.push_back(id);
    return out;
}

std::vector<std::tuple<uint64_t, uint64_t, uint32_t>> Pool::mappings(uint32_t dev) {
    std::lock_guard lk(mu_);
    require_device(dev);
    std::vector<std::tuple<uint64_t, uint64_t, uint32_t>> out;
    md_->walk_mappings(dev, [&](uint64_t vb, Mapping m) { out.emplace_back(vb, m.data_block, m.time); });
    md_->end_operation();
    return out;
}

PoolStatus Pool::status() {
    std::lock_guard lk(mu_);
    require_open();
    return status_locked();
}

PoolStatus Pool::status_locked() {
    PoolStatus s;
    s.transaction_id = md_->transaction_id();
    s.total_metadata_blocks = md_->meta_nr_blocks();
    s.used_metadata_blocks = s.total_metadata_blocks - md_->meta_nr_free();
    s.total_data_blocks = md_->data_nr_blocks();
    s.used_data_blocks = s.total_data_blocks - md_->data_nr_free();
    s.held_root = md_->held_root();
    s.mode = mode_ == Mode::read_only ? "ro" : mode_ == Mode::out_of_data_space ? "out_of_data_space" : "rw";
    s.discards = opts_.ignore_discard        ? "ignore_discard"
                 : opts_.no_discard_passdown ? "no_discard_passdown"
                                             : "discard_passdown";
    s.no_space = opts_.error_if_no_space ? "error_if_no_space" : "queue_if_no_space";
    s.needs_check = md_->needs_check();
    s.metadata_low_watermark = std::min<uint64_t>(1024, s.total_metadata_blocks / 4);
    s.data_block_sectors = md_->data_block_sectors();
    s.low_water_mark = opts_.low_water_mark;
    s.low_water_mark_reached = md_->data_nr_free() <= opts_.low_water_mark;
    s.time = md_->time();
    s.devices = md_->devices().size();
    s.commits = md_->commits();
    s.last_commit_blocks_written = md_->last_commit_blocks_written();
    s.metadata_blocks_written = md_->blocks_written();
    s.transaction_open = md_->changed();
    s.line = std::to_string(s.transaction_id) + " " + std::to_string(s.used_metadata_blocks) + "/" +
             std::to_string(s.total_metadata_blocks) + " " + std::to_string(s.used_data_blocks) +
             "/" + std::to_string(s.total_data_blocks) + " " +
             (s.held_root ? std::to_string(s.held_root) : "-") + " " + s.mode + " " + s.discards +
             " " + s.no_space + " " + (s.needs_check ? "needs_check" : "-") + " " +
             std::to_string(s.metadata_low_watermark);
    return s;
}

DeviceStatus Pool::device_status(uint32_t dev) {
    std::lock_guard lk(mu_);
    require_device(dev);
    const DeviceInfo& d = *md_->device(dev);
    uint64_t sectors = md_->data_block_sectors();
    DeviceStatus s;
    s.id = dev;
    s.mapped_blocks = d.mapped_blocks;
    s.mapped_sectors = d.mapped_blocks * sectors;
    s.transaction_id = d.transaction_id;
    s.creation_time = d.creation_time;
    s.snapshotted_time = d.snapshotted_time;
    if (auto h = md_->highest_mapped(dev)) s.highest_mapped_sector = (*h + 1) * sectors - 1;
    s.line = std::to_string(s.mapped_sectors) + " " +
             (s.highest_mapped_sector ? std::to_string(*s.highest_mapped_sector) : "-");
    md_->end_operation();
    return s;
}

}  // namespace sk::thin
