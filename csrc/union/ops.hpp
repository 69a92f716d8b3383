// The union's FUSE operations, one handler per opcode, as libfuse's passthrough_hp has one
// function per operation: a handler decodes its request's arguments, calls the Engine and
// replies exactly once (FORGET and BATCH_FORGET get no reply, as the protocol says). The
// session (session.hpp) reads requests and picks the handler; an opcode without one is
// answered ENOSYS.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "union/engine.hpp"
#include "union/fuse_proto.hpp"
#include "union/reply.hpp"

namespace sk::union_fs {

class Session;

// Thrown when a request is shorter than its arguments: it is answered EINVAL.
struct Malformed {};

// A request's arguments, read in order.
class RequestArgs {
public:
    RequestArgs(const char* p, size_t left) : p_(p), left_(left) {}

    template <class T>
    const T& get() {
        if (left_ < sizeof(T)) throw Malformed{};
        const T* v = reinterpret_cast<const T*>(p_);
        p_ += sizeof(T);
        left_ -= sizeof(T);
        return *v;
    }
    // A NUL-terminated string (a name, a symlink's target).
    std::string str() {
        const void* nul = std::memchr(p_, 0, left_);
        if (!nul) throw Malformed{};
        size_t n = static_cast<size_t>(static_cast<const char*>(nul) - p_);
        std::string s(p_, n);
        p_ += n + 1;
        left_ -= n + 1;
        return s;
    }
    // The n bytes that follow (a write's data, an xattr's value).
    const char* bytes(size_t n) {
        if (left_ < n) throw Malformed{};
        const char* v = p_;
        p_ += n;
        left_ -= n;
        return v;
    }
    const char* rest() const { return p_; }
    size_t left() const { return left_; }

private:
    const char* p_;
    size_t left_;
};

// One request being served.
struct Request {
    Session& session;
    Engine& engine;
    int fd;  // the /dev/fuse clone it came from: the reply goes there
    const fuse::InHeader& in;
    RequestArgs args;
    std::vector<char>& buf;  // room for the data of a reply (max_write bytes)

    // Replies err, or (err 0) the parts in order.
    void reply(int err, std::initializer_list<iovec> parts = {}) const {
        send(fd, in.unique, err, parts);
    }
    Caller caller() const { return {in.uid, in.gid}; }
};

using Handler = void (*)(Request&);

// The handler of an opcode; nullptr for one the union does not serve.
Handler handler_for(uint32_t opcode);

}  // namespace sk::union_fs
