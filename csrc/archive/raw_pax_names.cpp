#include "archive/raw_pax_names.hpp"

#include <algorithm>
#include <cstring>
#include <string_view>

namespace sk {
namespace {

constexpr uint64_t kMaxSpecial = 1 << 20;  // libarchive's own bound on special headers

uint64_t round_up(uint64_t n) { return (n + 511) & ~uint64_t(511); }

// A numeric header field: octal, or base-256 when the top bit of the first byte is set.
// Returns false for anything else.
bool parse_number(const char* f, std::size_t len, uint64_t& out) {
    auto* u = reinterpret_cast<const unsigned char*>(f);
    out = 0;
    if (u[0] & 0x80) {
        if (u[0] != 0x80) return false;  // negative or over 63 bits
        for (std::size_t i = 1; i < len; ++i) {
            if (out >> 55) return false;
            out = (out << 8) | u[i];
        }
        return true;
    }
    std::size_t i = 0;
    while (i < len && f[i] == ' ') ++i;
    for (; i < len && f[i] >= '0' && f[i] <= '7'; ++i) {
        if (out >> 60) return false;
        out = out * 8 + static_cast<uint64_t>(f[i] - '0');
    }
    return true;
}

}  // namespace

void RawPaxNames::feed(const char* p, std::size_t n) {
    while (n && state_ != State::stopped) {
        switch (state_) {
            case State::header:
            case State::sparse_ext: {
                if (block_len_ == 0) block_start_ = offset_;
                std::size_t k = std::min(n, sizeof block_ - block_len_);
                std::memcpy(block_ + block_len_, p, k);
                block_len_ += k;
                p += k, n -= k, offset_ += k;
                if (block_len_ == sizeof block_) {
                    block_len_ = 0;
                    if (state_ == State::header)
                        on_header();
                    else
                        on_sparse_ext();
                }
                break;
            }
            case State::pax_data: {
                std::size_t k = static_cast<std::size_t>(std::min<uint64_t>(n, need_));
                std::size_t keep = pax_.size() < pax_size_
                                       ? std::min<std::size_t>(k, pax_size_ - pax_.size())
                                       : 0;
                pax_.append(p, keep);
                p += k, n -= k, offset_ += k, need_ -= k;
                if (need_ == 0) {
                    parse_pax();
                    state_ = State::header;
                }
                break;
            }
            case State::skip: {
                std::size_t k = static_cast<std::size_t>(std::min<uint64_t>(n, need_));
                p += k, n -= k, offset_ += k, need_ -= k;
                if (need_ == 0) state_ = State::header;
                break;
            }
            case State::stopped: break;
        }
    }
    offset_ += n;
}

void RawPaxNames::on_header() {
    const char* h = block_;
    // Checksums are libarchive's to verify; a damaged header ends the stream there anyway,
    // and any disagreement shows as a record whose offset matches nothing.
    if (std::all_of(h, h + 512, [](char c) { return c == 0; })) {
        stop();  // the end of the archive
        return;
    }
    if (!chain_open_) {
        chain_open_ = true;
        current_ = Names{};
        current_.chain_start = block_start_;
        size_override_.reset();
    }
    uint64_t size;
    if (!parse_number(h + 124, 12, size)) return stop();
    char type = h[156];
    switch (type) {
        case 'x':
        case 'X':
            seen_pax_ = true;
            if (size > kMaxSpecial) return stop();
            pax_.clear();
            pax_size_ = size;
            need_ = round_up(size);
            state_ = need_ ? State::pax_data : State::header;
            if (!need_) parse_pax();
            return;
        case 'g':
            seen_pax_ = true;
            [[fallthrough]];
        case 'L':
        case 'K':
        case 'A':
            if (size > kMaxSpecial) return stop();
            need_ = round_up(size);
            state_ = need_ ? State::skip : State::header;
            return;
        case 'V':  // libarchive skips a volume header without its data
            return;
        default: break;
    }

    // The main header of an entry: how much data follows, as libarchive counts it.
    uint64_t data = size_override_ ? *size_override_ : size;
    bool gnu = std::memcmp(h + 257, "ustar  \0", 8) == 0;
    switch (type) {
        case '2':
        case '3':
        case '4':
        case '5':
        case '6': data = 0; break;
        case '1':
            if (data && !seen_pax_) {
                if (!gnu) return stop();  // libarchive guesses from the next header here
                data = 0;
            }
            break;
        default: break;
    }
    current_.typeflag = type;
    if (current_.path || current_.linkpath) ready_.push_back(current_);
    chain_open_ = false;
    pending_data_ = data;
    if (gnu && type == 'S' && h[482]) {  // old GNU sparse map continues in extension blocks
        state_ = State::sparse_ext;
        return;
    }
    need_ = round_up(data);
    state_ = need_ ? State::skip : State::header;
}

void RawPaxNames::on_sparse_ext() {
    if (block_[504]) return;  // another extension block follows
    need_ = round_up(pending_data_);
    state_ = need_ ? State::skip : State::header;
}

// Records are "<length> <key>=<value>\n"; malformed ones end the parse (libarchive warns
// about them, and the caller treats that warning as an error).
void RawPaxNames::parse_pax() {
    std::size_t pos = 0;
    bool have_path = current_.path.has_value(), have_link = current_.linkpath.has_value();
    std::optional<std::string> path, link, sparse_name;
    while (pos < pax_.size()) {
        std::size_t sp = pax_.find(' ', pos);
        if (sp == std::string::npos || sp == pos || sp - pos > 7) break;
        uint64_t len = 0;
        for (std::size_t i = pos; i < sp; ++i) {
            if (pax_[i] < '0' || pax_[i] > '9') return;
            len = len * 10 + static_cast<uint64_t>(pax_[i] - '0');
        }
        if (len < sp - pos + 2 || pos + len > pax_.size() || pax_[pos + len - 1] != '\n') return;
        std::string_view rec(pax_.data() + sp + 1, pos + len - 1 - (sp + 1));
        pos += len;
        std::size_t eq = rec.find('=');
        if (eq == std::string_view::npos) return;
        std::string_view key = rec.substr(0, eq), value = rec.substr(eq + 1);
        // libarchive stops a value at its first NUL byte.
        value = value.substr(0, value.find('\0'));
        if (key == "path")
            path = std::string(value);
        else if (key == "linkpath")
            link = std::string(value);
        else if (key == "GNU.sparse.name")
            sparse_name = std::string(value);
        else if (key == "size") {
            uint64_t s = 0;
            for (char c : value) {
                if (c < '0' || c > '9') return stop();
                s = s * 10 + static_cast<uint64_t>(c - '0');
            }
            size_override_ = s;
        }
    }
    if (sparse_name) path = sparse_name;
    // In a chain of several extended headers libarchive lets the first one win.
    if (path && !have_path) current_.path = std::move(path);
    if (link && !have_link) current_.linkpath = std::move(link);
}

const RawPaxNames::Names* RawPaxNames::find(uint64_t chain_start) {
    while (!ready_.empty() && ready_.front().chain_start < chain_start) ready_.pop_front();
    if (!ready_.empty() && ready_.front().chain_start == chain_start) return &ready_.front();
    return nullptr;
}

}  // namespace sk
