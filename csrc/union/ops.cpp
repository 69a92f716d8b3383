// The handlers of the union's FUSE operations (see ops.hpp), in opcode order.
#include "union/ops.hpp"

#include <sys/statfs.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "union/session.hpp"

namespace sk::union_fs {
namespace {

using namespace sk::fuse;

// ---- replies of several operations

void reply_entry(const Request& r, int err, const Entry& e) {
    if (err) return r.reply(err);
    EntryOut o = entry_out(e);
    r.reply(0, {part(o)});
}

void reply_attr(const Request& r, int err, const AttrResult& a) {
    if (err) return r.reply(err);
    AttrOut o = attr_out(a);
    r.reply(0, {part(o)});
}

// A count of bytes written (WRITE, COPY_FILE_RANGE).
void reply_written(const Request& r, int err, size_t done) {
    if (err) return r.reply(err);
    WriteOut o{static_cast<uint32_t>(done), 0};
    r.reply(0, {part(o)});
}

FileHandle* file(uint64_t fh) { return reinterpret_cast<FileHandle*>(fh); }
DirHandle* dir(uint64_t fh) { return reinterpret_cast<DirHandle*>(fh); }

// ---- the operations

void op_lookup(Request& r) {
    Entry e;
    int err = r.engine.lookup(r.in.nodeid, r.args.str(), e);
    reply_entry(r, err, e);
}

void op_forget(Request& r) { r.engine.forget(r.in.nodeid, r.args.get<ForgetIn>().nlookup); }

void op_getattr(Request& r) {
    const GetattrIn& in = r.args.get<GetattrIn>();
    FileHandle* fh = (in.getattr_flags & GETATTR_FH) ? file(in.fh) : nullptr;
    AttrResult a;
    int err = r.engine.getattr(r.in.nodeid, fh, a);
    reply_attr(r, err, a);
}

void op_setattr(Request& r) {
    const SetattrIn& in = r.args.get<SetattrIn>();
    SetattrArgs s;
    s.valid = in.valid;
    s.mode = in.mode;
    s.uid = in.uid;
    s.gid = in.gid;
    s.size = static_cast<off_t>(in.size);
    s.atime = {static_cast<time_t>(in.atime), static_cast<long>(in.atimensec)};
    s.mtime = {static_cast<time_t>(in.mtime), static_cast<long>(in.mtimensec)};
    if (in.valid & FATTR_FH) s.fh = file(in.fh);
    AttrResult a;
    int err = r.engine.setattr(r.in.nodeid, s, a);
    reply_attr(r, err, a);
}

void op_readlink(Request& r) {
    std::string target;
    if (int err = r.engine.readlink(r.in.nodeid, target)) return r.reply(err);
    r.reply(0, {{target.data(), target.size()}});
}

void op_symlink(Request& r) {
    std::string name = r.args.str();
    std::string target = r.args.str();
    Entry e;
    int err = r.engine.symlink(r.in.nodeid, name, target, r.caller(), e);
    reply_entry(r, err, e);
}

void op_mknod(Request& r) {
    const MknodIn& in = r.args.get<MknodIn>();
    Entry e;
    int err = r.engine.mknod(r.in.nodeid, r.args.str(), in.mode, in.rdev, in.umask, r.caller(), e);
    reply_entry(r, err, e);
}

void op_mkdir(Request& r) {
    const MkdirIn& in = r.args.get<MkdirIn>();
    Entry e;
    int err = r.engine.mkdir(r.in.nodeid, r.args.str(), in.mode, in.umask, r.caller(), e);
    reply_entry(r, err, e);
}

void op_unlink(Request& r) { r.reply(r.engine.unlink(r.in.nodeid, r.args.str())); }

void op_rmdir(Request& r) { r.reply(r.engine.rmdir(r.in.nodeid, r.args.str())); }

void rename_with(Request& r, uint64_t newdir, unsigned flags) {
    std::string from = r.args.str();
    std::string to = r.args.str();
    r.reply(r.engine.rename(r.in.nodeid, from, newdir, to, flags));
}

void op_rename(Request& r) { rename_with(r, r.args.get<RenameIn>().newdir, 0); }

void op_rename2(Request& r) {
    const Rename2In& in = r.args.get<Rename2In>();
    rename_with(r, in.newdir, in.flags);
}

void op_link(Request& r) {
    uint64_t old = r.args.get<LinkIn>().oldnodeid;
    Entry e;
    int err = r.engine.link(old, r.in.nodeid, r.args.str(), e);
    reply_entry(r, err, e);
}

void op_open(Request& r) {
    const OpenIn& in = r.args.get<OpenIn>();
    OpenResult o;
    if (int err = r.engine.open(r.in.nodeid, static_cast<int>(in.flags), o)) return r.reply(err);
    OpenOut out = open_out(o);
    r.reply(0, {part(out)});
}

void op_read(Request& r) {
    const ReadIn& in = r.args.get<ReadIn>();
    size_t size = std::min<size_t>(in.size, r.buf.size()), done = 0;
    int err = r.engine.read(file(in.fh), r.buf.data(), size, static_cast<off_t>(in.offset), done);
    if (err) return r.reply(err);
    r.reply(0, {{r.buf.data(), done}});
}

void op_write(Request& r) {
    const WriteIn& in = r.args.get<WriteIn>();
    const char* data = r.args.bytes(in.size);
    size_t done = 0;
    int err = r.engine.write(file(in.fh), data, in.size, static_cast<off_t>(in.offset), done);
    reply_written(r, err, done);
}

void op_statfs(Request& r) {
    struct statfs s;
    if (int err = r.engine.statfs(s)) return r.reply(err);
    Kstatfs k{};
    k.blocks = s.f_blocks;
    k.bfree = s.f_bfree;
    k.bavail = s.f_bavail;
    k.files = s.f_files;
    k.ffree = s.f_ffree;
    k.bsize = static_cast<uint32_t>(s.f_bsize);
    k.namelen = static_cast<uint32_t>(s.f_namelen);
    k.frsize = static_cast<uint32_t>(s.f_frsize);
    r.reply(0, {part(k)});
}

void op_release(Request& r) {
    // The kernel sends it in the background once a file is closed: the caller goes on at
    // once, and its next request (the next lookup or open) should not wait behind this one,
    // so another thread takes over reading first.
    r.session.blocking();
    r.engine.release(file(r.args.get<ReleaseIn>().fh));
    r.reply(0);
}

void op_fsync(Request& r) {
    const FsyncIn& in = r.args.get<FsyncIn>();
    r.reply(r.engine.fsync(file(in.fh), in.fsync_flags & FSYNC_FDATASYNC));
}

void op_setxattr(Request& r) {
    const SetxattrIn& in = r.args.get<SetxattrIn>();
    std::string name = r.args.str();
    std::string value(r.args.bytes(in.size), in.size);
    r.reply(r.engine.setxattr(r.in.nodeid, name, value, static_cast<int>(in.flags)));
}

// GETXATTR and LISTXATTR: with size 0 the kernel asks for the length only.
void reply_xattr(const Request& r, int err, size_t size, const std::string& value, size_t len) {
    if (err) return r.reply(err);
    if (size == 0) {
        GetxattrOut o{static_cast<uint32_t>(len), 0};
        return r.reply(0, {part(o)});
    }
    r.reply(0, {{const_cast<char*>(value.data()), value.size()}});
}

void op_getxattr(Request& r) {
    const GetxattrIn& in = r.args.get<GetxattrIn>();
    std::string value;
    size_t len = 0;
    int err = r.engine.getxattr(r.in.nodeid, r.args.str(), in.size, value, len);
    reply_xattr(r, err, in.size, value, len);
}

void op_listxattr(Request& r) {
    const GetxattrIn& in = r.args.get<GetxattrIn>();
    std::string value;
    size_t len = 0;
    int err = r.engine.listxattr(r.in.nodeid, in.size, value, len);
    reply_xattr(r, err, in.size, value, len);
}

void op_removexattr(Request& r) { r.reply(r.engine.removexattr(r.in.nodeid, r.args.str())); }

// Nothing to do at close: ENOSYS tells the kernel to stop asking (FUSE no_flush).
void op_flush(Request& r) { r.reply(ENOSYS); }

void op_init(Request& r) { r.session.init(r.fd, r.in.unique, r.args.rest(), r.args.left()); }

void op_opendir(Request& r) {
    DirHandle* dh = nullptr;
    if (int err = r.engine.opendir(r.in.nodeid, dh)) return r.reply(err);
    OpenOut o{};
    o.fh = reinterpret_cast<uint64_t>(dh);
    r.reply(0, {part(o)});
}

// A directory entry of a READDIR(PLUS) reply: the Dirent, the name, zeros up to 8 bytes.
size_t dirent_size(const MergedEntry& e) {
    return (sizeof(Dirent) + e.name.size() + 7) & ~size_t{7};
}

void put_dirent(char* p, const MergedEntry& e, uint64_t next_offset) {
    Dirent d{e.ino, next_offset, static_cast<uint32_t>(e.name.size()), e.type};
    std::memcpy(p, &d, sizeof d);
    std::memcpy(p + sizeof d, e.name.data(), e.name.size());
    std::memset(p + sizeof d + e.name.size(), 0, dirent_size(e) - sizeof d - e.name.size());
}

void op_readdir(Request& r) {
    const ReadIn& in = r.args.get<ReadIn>();
    DirHandle* dh = dir(in.fh);
    if (in.offset == 0) r.engine.rewind(dh);
    size_t max = std::min<size_t>(in.size, r.buf.size()), pos = 0;
    for (size_t i = in.offset; i < dh->entries.size(); ++i) {
        const MergedEntry& e = dh->entries[i];
        if (pos + dirent_size(e) > max) break;
        put_dirent(r.buf.data() + pos, e, i + 1);
        pos += dirent_size(e);
    }
    r.reply(0, {{r.buf.data(), pos}});
}

void op_releasedir(Request& r) {
    r.engine.releasedir(dir(r.args.get<ReleaseIn>().fh));
    r.reply(0);
}

void op_fsyncdir(Request& r) {
    const FsyncIn& in = r.args.get<FsyncIn>();
    r.reply(r.engine.fsyncdir(r.in.nodeid, in.fsync_flags & FSYNC_FDATASYNC));
}

void op_create(Request& r) {
    const CreateIn& in = r.args.get<CreateIn>();
    Entry e;
    OpenResult o;
    if (int err = r.engine.create(r.in.nodeid, r.args.str(), static_cast<int>(in.flags), in.mode,
                                  in.umask, r.caller(), e, o))
        return r.reply(err);
    EntryOut eo = entry_out(e);
    OpenOut oo = open_out(o);
    r.reply(0, {part(eo), part(oo)});
}

// The kernel stops sending them.
void op_interrupt(Request& r) { r.reply(ENOSYS); }

void op_destroy(Request& r) { r.reply(0); }

// isatty() on every open, chattr: not here.
void op_ioctl(Request& r) { r.reply(ENOTTY); }

void op_batch_forget(Request& r) {
    uint32_t count = r.args.get<BatchForgetIn>().count;
    for (uint32_t i = 0; i < count && r.args.left() >= sizeof(ForgetOne); ++i) {
        const ForgetOne& f = r.args.get<ForgetOne>();
        r.engine.forget(f.nodeid, f.nlookup);
    }
}

void op_fallocate(Request& r) {
    const FallocateIn& in = r.args.get<FallocateIn>();
    r.reply(r.engine.fallocate(file(in.fh), static_cast<int>(in.mode),
                               static_cast<off_t>(in.offset), static_cast<off_t>(in.length)));
}

void op_readdirplus(Request& r) {
    const ReadIn& in = r.args.get<ReadIn>();
    DirHandle* dh = dir(in.fh);
    if (in.offset == 0) r.engine.rewind(dh);
    size_t max = std::min<size_t>(in.size, r.buf.size()), pos = 0, count = 0;
    auto rec_size = [](const MergedEntry& e) { return sizeof(EntryOut) + dirent_size(e); };
    // What fits is decided first: every entry looked up must reach the kernel.
    for (size_t i = in.offset; i < dh->entries.size(); ++i, ++count) {
        if (pos + rec_size(dh->entries[i]) > max) break;
        pos += rec_size(dh->entries[i]);
    }
    std::vector<Entry> entries;
    r.engine.plus_entries(dh, in.offset, count, entries);
    pos = 0;
    for (size_t k = 0; k < count; ++k) {
        const MergedEntry& e = dh->entries[in.offset + k];
        EntryOut eo{};
        if (entries[k].id) eo = entry_out(entries[k]);
        std::memcpy(r.buf.data() + pos, &eo, sizeof eo);
        put_dirent(r.buf.data() + pos + sizeof eo, e, in.offset + k + 1);
        pos += rec_size(e);
    }
    r.reply(0, {{r.buf.data(), pos}});
}

void op_lseek(Request& r) {
    const LseekIn& in = r.args.get<LseekIn>();
    off_t pos = 0;
    if (int err = r.engine.lseek(file(in.fh), static_cast<off_t>(in.offset),
                                 static_cast<int>(in.whence), pos))
        return r.reply(err);
    LseekOut o{static_cast<uint64_t>(pos)};
    r.reply(0, {part(o)});
}

void op_copy_file_range(Request& r) {
    const CopyFileRangeIn& in = r.args.get<CopyFileRangeIn>();
    size_t done = 0;
    int err = r.engine.copy_file_range(file(in.fh_in), static_cast<off_t>(in.off_in),
                                       file(in.fh_out), static_cast<off_t>(in.off_out),
                                       std::min<size_t>(in.len, 1u << 30),
                                       static_cast<unsigned>(in.flags), done);
    reply_written(r, err, done);
}

void op_syncfs(Request& r) { r.reply(r.engine.syncfs()); }

constexpr std::array<Handler, 64> kHandlers = [] {
    std::array<Handler, 64> t{};
    t[LOOKUP] = op_lookup;
    t[FORGET] = op_forget;
    t[GETATTR] = op_getattr;
    t[SETATTR] = op_setattr;
    t[READLINK] = op_readlink;
    t[SYMLINK] = op_symlink;
    t[MKNOD] = op_mknod;
    t[MKDIR] = op_mkdir;
    t[UNLINK] = op_unlink;
    t[RMDIR] = op_rmdir;
    t[RENAME] = op_rename;
    t[LINK] = op_link;
    t[OPEN] = op_open;
    t[READ] = op_read;
    t[WRITE] = op_write;
    t[STATFS] = op_statfs;
    t[RELEASE] = op_release;
    t[FSYNC] = op_fsync;
    t[SETXATTR] = op_setxattr;
    t[GETXATTR] = op_getxattr;
    t[LISTXATTR] = op_listxattr;
    t[REMOVEXATTR] = op_removexattr;
    t[FLUSH] = op_flush;
    t[INIT] = op_init;
    t[OPENDIR] = op_opendir;
    t[READDIR] = op_readdir;
    t[RELEASEDIR] = op_releasedir;
    t[FSYNCDIR] = op_fsyncdir;
    t[CREATE] = op_create;
    t[INTERRUPT] = op_interrupt;
    t[DESTROY] = op_destroy;
    t[IOCTL] = op_ioctl;
    t[BATCH_FORGET] = op_batch_forget;
    t[FALLOCATE] = op_fallocate;
    t[READDIRPLUS] = op_readdirplus;
    t[RENAME2] = op_rename2;
    t[LSEEK] = op_lseek;
    t[COPY_FILE_RANGE] = op_copy_file_range;
    t[SYNCFS] = op_syncfs;
    return t;
}();

}  // namespace

Handler handler_for(uint32_t opcode) {
    return opcode < kHandlers.size() ? kHandlers[opcode] : nullptr;
}

}  // namespace sk::union_fs
