// Encoding replies to the kernel: the out header and the reply structs built from what the
// Engine returned.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <initializer_list>

#include "union/engine.hpp"
#include "union/fuse_proto.hpp"

namespace sk::union_fs {

// Writes one reply: the header, then (unless err) the parts in order. A reply to a request
// the kernel gave up on meanwhile (ENOENT) is dropped silently.
void send(int fd, uint64_t unique, int err, std::initializer_list<iovec> parts = {});

template <class T>
iovec part(const T& v) {
    return {const_cast<T*>(&v), sizeof v};
}

fuse::EntryOut entry_out(const Entry& e);
fuse::AttrOut attr_out(const AttrResult& r);
fuse::OpenOut open_out(const OpenResult& r);

}  // namespace sk::union_fs
