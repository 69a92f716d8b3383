#include "union/reply.hpp"

#include <unistd.h>

#include <cerrno>

namespace sk::union_fs {

using namespace sk::fuse;

namespace {

void split_time(double secs, uint64_t& s, uint32_t& ns) {
    s = static_cast<uint64_t>(secs);
    ns = static_cast<uint32_t>((secs - static_cast<double>(s)) * 1e9);
}

void to_attr(const struct stat& st, Attr& a) {
    a = Attr{};
    a.ino = st.st_ino;
    a.size = static_cast<uint64_t>(st.st_size);
    a.blocks = static_cast<uint64_t>(st.st_blocks);
    a.atime = static_cast<uint64_t>(st.st_atim.tv_sec);
    a.mtime = static_cast<uint64_t>(st.st_mtim.tv_sec);
    a.ctime = static_cast<uint64_t>(st.st_ctim.tv_sec);
    a.atimensec = static_cast<uint32_t>(st.st_atim.tv_nsec);
    a.mtimensec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
    a.ctimensec = static_cast<uint32_t>(st.st_ctim.tv_nsec);
    a.mode = st.st_mode;
    a.nlink = static_cast<uint32_t>(st.st_nlink);
    a.uid = st.st_uid;
    a.gid = st.st_gid;
    // glibc's dev_t keeps the kernel's 32-bit encoding in its low bits for usual numbers.
    a.rdev = static_cast<uint32_t>(st.st_rdev);
    a.blksize = static_cast<uint32_t>(st.st_blksize);
}

}  // namespace

void send(int fd, uint64_t unique, int err, std::initializer_list<iovec> parts) {
    OutHeader h{};
    h.unique = unique;
    h.error = -err;
    iovec iov[4];
    int n = 0;
    iov[n++] = {&h, sizeof h};
    size_t len = sizeof h;
    if (!err)
        for (const iovec& p : parts) {
            iov[n++] = p;
            len += p.iov_len;
        }
    h.len = static_cast<uint32_t>(len);
    // ENOENT: the request was interrupted meanwhile; nobody waits for the answer.
    while (::writev(fd, iov, n) < 0 && errno == EINTR) {
    }
}

fuse::EntryOut entry_out(const Entry& e) {
    EntryOut o{};
    o.nodeid = e.id;
    split_time(e.entry_timeout, o.entry_valid, o.entry_valid_nsec);
    split_time(e.attr_timeout, o.attr_valid, o.attr_valid_nsec);
    to_attr(e.st, o.attr);
    return o;
}

fuse::AttrOut attr_out(const AttrResult& r) {
    AttrOut o{};
    uint64_t s;
    split_time(r.timeout, s, o.attr_valid_nsec);
    o.attr_valid = s;
    to_attr(r.st, o.attr);
    return o;
}

fuse::OpenOut open_out(const OpenResult& r) {
    OpenOut o{};
    o.fh = reinterpret_cast<uint64_t>(r.fh);
    o.open_flags = r.open_flags;
    o.backing_id = r.backing_id;
    return o;
}


}  // namespace sk::union_fs
