// A thin pool: dm-thin's semantics over a metadata device and a data device, in one process.
//
// Thin devices are addressed by their 24-bit ids and read, written and discarded at any byte
// offset; the pool maps each data block on first write (zeroing the rest of it unless
// skip_block_zeroing), breaks sharing with snapshots on the first write to a shared block
// (copying it, with copy_file_range where the data file's filesystem can), and unmaps whole
// blocks on discard. Messages are dm-thin's ("create_thin 1", "create_snap 2 1", ...).
//
// Durability as in the kernel: changes are committed by commit() (what a FLUSH or FUA is to
// a dm-thin device: ThinPool.flush() and the FUSE server's flush and fsync call it), every
// commit_interval seconds by a background thread, when a transaction grows large, and on
// close. A crash loses at most the uncommitted changes; the metadata stays consistent.
//
// Thread-safe: one mutex serialises every metadata operation of a pool (several devices of
// one pool may be served from several threads). Data I/O of reads, and of writes whose blocks
// are all mapped to the writing device alone, runs outside that mutex: the operation looks up
// its data blocks under the mutex and pins them (a count of I/O in flight). Whatever could
// let a pinned block change hands waits, under the mutex, for the pins to drain first:
// unmapping blocks (discard, delete), create_snap (a block written in place must not become
// shared mid-write), dropping a transaction, and close.
//
// Running out of data space puts the pool in out_of_data_space mode until a write finds
// space again. With error_if_no_space such a write fails with ENOSPC at once; otherwise
// (queue_if_no_space) it waits for space (a discard or a delete) up to no_space_timeout
// seconds counted from when the pool ran out, as the kernel's no_space_timeout; after that,
// writes that need a new block fail with ENOSPC at once until space is found.
//
// For tests, STORAGEKIT_THIN_TEST_IO_DELAY_US (read when a pool is opened) pauses every
// pinned read or write between the lookup and the I/O, so that races become likely.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "common/unique_fd.hpp"
#include "thin/data_file.hpp"
#include "thin/metadata.hpp"

namespace sk::thin {

struct PoolOptions {
    uint32_t data_block_sectors = 128;  // create only: 128..2097152, a multiple of 128
    uint64_t low_water_mark = 0;        // data blocks
    bool skip_block_zeroing = false;
    bool ignore_discard = false;
    bool no_discard_passdown = false;
    bool error_if_no_space = false;
    bool read_only = false;
    double commit_interval = 1.0;     // seconds; 0: commit only when asked (and when large)
    double no_space_timeout = 60.0;   // seconds a write waits for space (queue_if_no_space)
    uint64_t max_transaction_blocks = 0;  // metadata blocks; 0: a default from the size
    size_t cache_blocks = 4096;           // metadata block cache (4 KiB each)
    // create only: size the files first (0: use them as they are; they must exist then).
    uint64_t metadata_size = 0, data_size = 0;
};

struct PoolStatus {
    uint64_t transaction_id = 0;
    uint64_t used_metadata_blocks = 0, total_metadata_blocks = 0;
    uint64_t used_data_blocks = 0, total_data_blocks = 0;
    uint64_t held_root = 0;  // 0: none
    std::string mode;        // rw | ro | out_of_data_space
    std::string discards;    // ignore_discard | discard_passdown | no_discard_passdown
    std::string no_space;    // error_if_no_space | queue_if_no_space
    bool needs_check = false;
    uint64_t metadata_low_watermark = 0;
    uint32_t data_block_sectors = 0;
    uint64_t low_water_mark = 0;
    bool low_water_mark_reached = false;
    uint32_t time = 0;
    uint64_t devices = 0;
    uint64_t commits = 0;
    uint64_t last_commit_blocks_written = 0;
    uint64_t metadata_blocks_written = 0;
    bool transaction_open = false;
    std::string line;  // the kernel's pool status line
};

// A piece of a read: bytes of the data file, or a hole that reads as zeros.
struct ReadExtent {
    uint64_t data_offset = 0;  // in the data file, when mapped
    uint64_t len = 0;
    bool mapped = false;
};

struct DeviceStatus {
    uint32_t id = 0;
    uint64_t mapped_blocks = 0;
    uint64_t mapped_sectors = 0;
    std::optional<uint64_t> highest_mapped_sector;
    uint64_t transaction_id = 0;
    uint32_t creation_time = 0;
    uint32_t snapshotted_time = 0;
    std::string line;  // the kernel's thin status line
};

class Pool {
public:
    static std::unique_ptr<Pool> create(const std::string& metadata_path,
                                        const std::string& data_path, const PoolOptions& opts);
    static std::unique_ptr<Pool> open(const std::string& metadata_path,
                                      const std::string& data_path, const PoolOptions& opts);
    ~Pool();
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;

    // Commit and release everything; later calls fail with EBADF. Idempotent.
    void close();
    bool closed() const;

    void message(const std::string& msg);
    PoolStatus status();
    DeviceStatus device_status(uint32_t dev);
    std::vector<uint32_t> devices();
    // (virtual block, data block, time) of every mapping of dev, in order.
    std::vector<std::tuple<uint64_t, uint64_t, uint32_t>> mappings(uint32_t dev);

    void read(uint32_t dev, uint64_t offset, uint8_t* buf, size_t len);
    // A read done by the caller (say, spliced from data_fd()): the extents of [offset,
    // offset+len), pinned until end_read(), which must follow exactly once (even when
    // begin_read returns no extents).
    std::vector<ReadExtent> begin_read(uint32_t dev, uint64_t offset, size_t len);
    void end_read() { unpin_io(); }
    // Writes queued for space now fail with ENOSPC (for a server that is stopping).
    void fail_queued_writes();
    int data_fd() const { return data_->fd(); }
    void write(uint32_t dev, uint64_t offset, const uint8_t* buf, size_t len);
    void discard(uint32_t dev, uint64_t offset, uint64_t len);
    void commit();

    uint64_t block_bytes() const { return block_bytes_; }

private:
    enum class Mode { write, out_of_data_space, read_only };

    Pool(const std::string& metadata_path, const std::string& data_path, const PoolOptions& opts);
    void start();
    void lock_metadata();
    void require_open() const;
    void require_device(uint32_t dev) const;
    void require_writable() const;
    template <typename Fn>
    void mutate(Fn&& fn);
    void abort_transaction();
    void safe_point() { safe_point_ = md_->mutations(); }
    void commit_locked();
    void after_operation();
    uint64_t alloc_data();
    void write_block(uint32_t dev, uint64_t vblock, uint64_t in_block, const uint8_t* buf,
                     size_t len);
    void committer();
    PoolStatus status_locked();
    // Pin data I/O in flight (pin under mu_; unpin without it) and wait, under mu_, for none.
    void pin_io();
    void unpin_io();
    void drain_io();
    void io_delay() const;

    std::string meta_path_, data_path_;
    PoolOptions opts_;
    UniqueFd lock_fd_;
    std::unique_ptr<DataFile> data_;
    std::unique_ptr<Metadata> md_;
    uint64_t block_bytes_ = 0;
    Mode mode_ = Mode::write;
    uint64_t max_txn_blocks_ = 0;
    uint64_t safe_point_ = 0;  // mutations() when the open transaction was last consistent

    mutable std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false;
    std::thread committer_;
    bool txn_open_ = false;
    std::chrono::steady_clock::time_point txn_start_;
    std::condition_variable space_cv_;  // on mu_: blocks were freed (or the pool closed)
    std::chrono::steady_clock::time_point no_space_since_;
    uint64_t queue_cancels_ = 0;  // fail_queued_writes() calls

    std::mutex io_mu_;
    std::condition_variable io_cv_;
    uint64_t io_pins_ = 0;
    int io_delay_us_ = 0;  // STORAGEKIT_THIN_TEST_IO_DELAY_US: a pause before pinned I/O
};

}  // namespace sk::thin
