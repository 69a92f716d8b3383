// Byte-exact names for PAX entries.
//
// libarchive converts PAX "path"/"linkpath" values from UTF-8 into the locale's charset:
// non-ASCII names come out NFC-normalised (a different file name on Linux, where names are
// bytes) and names that are not valid UTF-8 are refused. GNU tar and Go's archive/tar store
// and extract such names as raw bytes. This tracker follows the tar stream next to
// libarchive, header by header, and keeps the raw values. Each record carries the stream
// offset where its entry's header chain starts; the caller uses a record only when that
// offset equals libarchive's archive_read_header_position(), so the two can never be
// silently out of step: on anything the tracker does not model it stops, and libarchive's
// own names are used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>

namespace sk {

class RawPaxNames {
public:
    struct Names {
        uint64_t chain_start = 0;
        char typeflag = 0;
        std::optional<std::string> path;
        std::optional<std::string> linkpath;
    };

    // Every byte handed to the tar reader, in order.
    void feed(const char* data, std::size_t size);

    // The record of the entry whose headers start at `chain_start` (records of earlier
    // entries are dropped), or nullptr.
    const Names* find(uint64_t chain_start);

private:
    enum class State { header, pax_data, sparse_ext, skip, stopped };
    void on_header();
    void on_sparse_ext();
    void parse_pax();
    void stop() { state_ = State::stopped; }

    uint64_t offset_ = 0;  // stream offset of the next byte fed
    State state_ = State::header;
    char block_[512];
    std::size_t block_len_ = 0;
    uint64_t block_start_ = 0;
    uint64_t need_ = 0;          // bytes left to collect (pax_data) or skip
    uint64_t pax_size_ = 0;
    uint64_t pending_data_ = 0;  // data of the main entry, after its sparse extension blocks
    std::string pax_;
    bool chain_open_ = false;
    bool seen_pax_ = false;
    Names current_;
    std::optional<uint64_t> size_override_;
    std::deque<Names> ready_;
};

}  // namespace sk
