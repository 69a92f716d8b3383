// SHA-256 through OpenSSL's EVP interface, for layer digests (diff IDs).
#pragma once

#include <cstddef>
#include <string>

struct evp_md_ctx_st;

namespace sk {

class Sha256 {
public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;

    void update(const void* data, std::size_t size);
    // Lowercase hex of the digest; the object cannot be updated afterwards.
    std::string hex_digest();

private:
    evp_md_ctx_st* ctx_;
};

}  // namespace sk
