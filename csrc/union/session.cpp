#include "union/session.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>

#include "common/syserror.hpp"
#include "union/fuse_proto.hpp"
#include "union/reply.hpp"

namespace sk::unionfs {
namespace {

using namespace sk::fuse;

constexpr uint32_t kMaxWrite = 1u << 20;
constexpr uint16_t kMaxPages = kMaxWrite / 4096;
// A request is at most its header, the write arguments and max_write bytes of data.
constexpr size_t kInBuf = kMaxWrite + 8192;

// Arguments of one request, read in order.
struct Args {
    const char* p;
    size_t left;

    template <class T>
    const T* get() {
        if (left < sizeof(T)) throw SysError(EINVAL, "request");
        const T* v = reinterpret_cast<const T*>(p);
        p += sizeof(T);
        left -= sizeof(T);
        return v;
    }
    std::string str() {
        const void* nul = std::memchr(p, 0, left);
        if (!nul) throw SysError(EINVAL, "request");
        size_t n = static_cast<const char*>(nul) - p;
        std::string s(p, n);
        p += n + 1;
        left -= n + 1;
        return s;
    }
};

}  // namespace

Session::Session(Engine& engine, UniqueFd dev, unsigned max_stack_depth)
    : eng_(engine), dev_(std::move(dev)), max_stack_depth_(max_stack_depth) {}

Session::~Session() { join(); }

void Session::start(unsigned threads) {
    if (threads == 0) threads = 1;
    std::vector<int> fds{dev_.get()};
    for (unsigned i = 1; i < threads; ++i) {
        UniqueFd c(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
        uint32_t master = static_cast<uint32_t>(dev_.get());
        if (!c || ::ioctl(c.get(), DEV_IOC_CLONE, &master) < 0) break;  // share the master fd
        fds.push_back(c.get());
        clones_.push_back(std::move(c));
    }
    for (unsigned i = 0; i < threads; ++i) {
        int fd = fds[i % fds.size()];
        live_.fetch_add(1);
        threads_.emplace_back([this, fd] { worker(fd); });
    }
}

bool Session::wait_init(std::chrono::milliseconds timeout) {
    std::unique_lock lk(init_mu_);
    return init_cv_.wait_for(lk, timeout, [&] { return init_done_ || live_.load() == 0; }) &&
           init_done_;
}

void Session::join() {
    for (auto& t : threads_)
        if (t.joinable()) t.join();
    threads_.clear();
}

std::string Session::stats() const {
    std::string out;
    for (int i = 0; i < 64; ++i) {
        uint64_t c = counts_[i].load();
        if (!c) continue;
        if (!out.empty()) out += ' ';
        out += std::to_string(i) + "=" + std::to_string(c);
    }
    return out;
}

int Session::open_backing(int fd) {
    BackingMap m{};
    m.fd = fd;
    int id = ::ioctl(dev_.get(), DEV_IOC_BACKING_OPEN, &m);
    return id < 0 ? -errno : id;
}

void Session::close_backing(int id) {
    uint32_t v = static_cast<uint32_t>(id);
    ::ioctl(dev_.get(), DEV_IOC_BACKING_CLOSE, &v);
}

void Session::worker(int fd) {
    // Its own umask and cwd: creating entries takes the caller's umask (see Engine::make_entry).
    ::unshare(CLONE_FS);
    ::umask(0);
    std::vector<char> in, out;
    try {
        in.resize(kInBuf);
        out.resize(kMaxWrite);
    } catch (const std::bad_alloc&) {
        live_.fetch_sub(1);
        return;
    }
    for (;;) {
        ssize_t n = ::read(fd, in.data(), in.size());
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == ENOENT) continue;
            break;  // ENODEV: unmounted; anything else: the connection is unusable
        }
        if (static_cast<size_t>(n) < sizeof(InHeader)) continue;
        handle(fd, in.data(), static_cast<size_t>(n), out);
    }
    if (live_.fetch_sub(1) == 1) {
        std::lock_guard lk(init_mu_);
        init_cv_.notify_all();
    }
}

void Session::init(int fd, uint64_t unique, const char* arg, size_t arglen) {
    InitIn in{};
    std::memcpy(&in, arg, std::min(arglen, sizeof in));
    if (in.major < kMajor) return send(fd, unique, EPROTO);
    InitOut o{};
    o.major = kMajor;
    if (in.major > kMajor) {
        // The kernel will ask again with our major version.
        return send(fd, unique, 0, {{&o, 8}});
    }
    o.minor = std::min(in.minor, kMinor);
    uint64_t offered = in.flags;
    if (in.flags & INIT_EXT) offered |= static_cast<uint64_t>(in.flags2) << 32;
    uint64_t want = ASYNC_READ | ATOMIC_O_TRUNC | BIG_WRITES | DONT_MASK | AUTO_INVAL_DATA |
                    DO_READDIRPLUS | READDIRPLUS_AUTO | ASYNC_DIO | PARALLEL_DIROPS |
                    POSIX_ACL | MAX_PAGES | CACHE_SYMLINKS | INIT_EXT;
    if (in.minor >= 40 && max_stack_depth_ > 0) want |= PASSTHROUGH;
    uint64_t got = want & offered;
    o.flags = static_cast<uint32_t>(got);
    o.flags2 = static_cast<uint32_t>(got >> 32);
    o.max_readahead = in.max_readahead;
    o.max_background = 64;
    o.congestion_threshold = 48;
    o.max_write = kMaxWrite;
    o.time_gran = 1;
    o.max_pages = kMaxPages;
    if (got & PASSTHROUGH) o.max_stack_depth = max_stack_depth_;
    passthrough_ = (got & PASSTHROUGH) != 0;
    eng_.enable_passthrough(passthrough_ ? this : nullptr);
    send(fd, unique, 0, {part(o)});
    std::lock_guard lk(init_mu_);
    init_done_ = true;
    init_cv_.notify_all();
}

void Session::handle(int fd, const char* buf, size_t len, std::vector<char>& out) {
    const InHeader& h = *reinterpret_cast<const InHeader*>(buf);
    Args a{buf + sizeof(InHeader), len - sizeof(InHeader)};
    uint64_t u = h.unique;
    counts_[h.opcode & 63].fetch_add(1, std::memory_order_relaxed);
    auto fail = [&](int e) { send(fd, u, e); };
    try {
        switch (h.opcode) {
            case INIT: return init(fd, u, a.p, a.left);
            case DESTROY: return send(fd, u, 0);
            case FORGET: return eng_.forget(h.nodeid, a.get<ForgetIn>()->nlookup);
            case BATCH_FORGET: {
                uint32_t count = a.get<BatchForgetIn>()->count;
                for (uint32_t i = 0; i < count && a.left >= sizeof(ForgetOne); ++i) {
                    const ForgetOne* f = a.get<ForgetOne>();
                    eng_.forget(f->nodeid, f->nlookup);
                }
                return;
            }
            case INTERRUPT: return fail(ENOSYS);  // the kernel stops sending them
            case LOOKUP: {
                Entry e;
                if (int r = eng_.lookup(h.nodeid, a.str(), e)) return fail(r);
                EntryOut o = entry_out(e);
                return send(fd, u, 0, {part(o)});
            }
            case GETATTR: {
                const GetattrIn* in = a.get<GetattrIn>();
                FileHandle* fh = (in->getattr_flags & GETATTR_FH)
                                     ? reinterpret_cast<FileHandle*>(in->fh)
                                     : nullptr;
                AttrResult r;
                if (int e = eng_.getattr(h.nodeid, fh, r)) return fail(e);
                AttrOut o = attr_out(r);
                return send(fd, u, 0, {part(o)});
            }
            case SETATTR: {
                const SetattrIn* in = a.get<SetattrIn>();
                SetattrArgs s;
                s.valid = in->valid;
                s.mode = in->mode;
                s.uid = in->uid;
                s.gid = in->gid;
                s.size = static_cast<off_t>(in->size);
                s.atime = {static_cast<time_t>(in->atime), static_cast<long>(in->atimensec)};
                s.mtime = {static_cast<time_t>(in->mtime), static_cast<long>(in->mtimensec)};
                if (in->valid & FATTR_FH) s.fh = reinterpret_cast<FileHandle*>(in->fh);
                AttrResult r;
                if (int e = eng_.setattr(h.nodeid, s, r)) return fail(e);
                AttrOut o = attr_out(r);
                return send(fd, u, 0, {part(o)});
            }
            case READLINK: {
                std::string target;
                if (int e = eng_.readlink(h.nodeid, target)) return fail(e);
                return send(fd, u, 0, {{target.data(), target.size()}});
            }
            case SYMLINK: {
                std::string name = a.str();
                std::string target = a.str();
                Entry e;
                if (int r = eng_.symlink(h.nodeid, name, target, {h.uid, h.gid}, e)) return fail(r);
                EntryOut o = entry_out(e);
                return send(fd, u, 0, {part(o)});
            }
            case MKNOD: {
                const MknodIn* in = a.get<MknodIn>();
                Entry e;
                if (int r = eng_.mknod(h.nodeid, a.str(), in->mode, in->rdev, in->umask,
                                       {h.uid, h.gid}, e))
                    return fail(r);
                EntryOut o = entry_out(e);
                return send(fd, u, 0, {part(o)});
            }
            case MKDIR: {
                const MkdirIn* in = a.get<MkdirIn>();
                Entry e;
                if (int r = eng_.mkdir(h.nodeid, a.str(), in->mode, in->umask, {h.uid, h.gid}, e))
                    return fail(r);
                EntryOut o = entry_out(e);
                return send(fd, u, 0, {part(o)});
            }
            case UNLINK: return fail(eng_.unlink(h.nodeid, a.str()));
            case RMDIR: return fail(eng_.rmdir(h.nodeid, a.str()));
            case RENAME:
            case RENAME2: {
                uint64_t newdir;
                unsigned flags = 0;
                if (h.opcode == RENAME) {
                    newdir = a.get<RenameIn>()->newdir;
                } else {
                    const Rename2In* in = a.get<Rename2In>();
                    newdir = in->newdir;
                    flags = in->flags;
                }
                std::string from = a.str();
                std::string to = a.str();
                return fail(eng_.rename(h.nodeid, from, newdir, to, flags));
            }
            case LINK: {
                uint64_t old = a.get<LinkIn>()->oldnodeid;
                Entry e;
                if (int r = eng_.link(old, h.nodeid, a.str(), e)) return fail(r);
                EntryOut o = entry_out(e);
                return send(fd, u, 0, {part(o)});
            }
            case OPEN: {
                const OpenIn* in = a.get<OpenIn>();
                OpenResult r;
                if (int e = eng_.open(h.nodeid, static_cast<int>(in->flags), r)) return fail(e);
                OpenOut o = open_out(r);
                return send(fd, u, 0, {part(o)});
            }
            case CREATE: {
                const CreateIn* in = a.get<CreateIn>();
                Entry e;
                OpenResult r;
                if (int err = eng_.create(h.nodeid, a.str(), static_cast<int>(in->flags), in->mode,
                                          in->umask, {h.uid, h.gid}, e, r))
                    return fail(err);
                EntryOut eo = entry_out(e);
                OpenOut oo = open_out(r);
                return send(fd, u, 0, {part(eo), part(oo)});
            }
            case READ: {
                const ReadIn* in = a.get<ReadIn>();
                auto* fh = reinterpret_cast<FileHandle*>(in->fh);
                size_t size = std::min<size_t>(in->size, out.size());
                ssize_t r = eng_.read(fh, out.data(), size, static_cast<off_t>(in->offset));
                if (r < 0) return fail(static_cast<int>(-r));
                return send(fd, u, 0, {{out.data(), static_cast<size_t>(r)}});
            }
            case WRITE: {
                const WriteIn* in = a.get<WriteIn>();
                if (a.left < in->size) return fail(EINVAL);
                auto* fh = reinterpret_cast<FileHandle*>(in->fh);
                ssize_t r = eng_.write(fh, a.p, in->size, static_cast<off_t>(in->offset));
                if (r < 0) return fail(static_cast<int>(-r));
                WriteOut o{static_cast<uint32_t>(r), 0};
                return send(fd, u, 0, {part(o)});
            }
            case STATFS: {
                struct statfs s;
                if (int e = eng_.statfs(s)) return fail(e);
                Kstatfs k{};
                k.blocks = s.f_blocks;
                k.bfree = s.f_bfree;
                k.bavail = s.f_bavail;
                k.files = s.f_files;
                k.ffree = s.f_ffree;
                k.bsize = static_cast<uint32_t>(s.f_bsize);
                k.namelen = static_cast<uint32_t>(s.f_namelen);
                k.frsize = static_cast<uint32_t>(s.f_frsize);
                return send(fd, u, 0, {part(k)});
            }
            case RELEASE: {
                eng_.release(reinterpret_cast<FileHandle*>(a.get<ReleaseIn>()->fh));
                return send(fd, u, 0);
            }
            case FLUSH: return send(fd, u, 0);
            case FSYNC: {
                const FsyncIn* in = a.get<FsyncIn>();
                return fail(eng_.fsync(reinterpret_cast<FileHandle*>(in->fh),
                                       in->fsync_flags & FSYNC_FDATASYNC));
            }
            case SETXATTR: {
                const SetxattrIn* in = a.get<SetxattrIn>();
                std::string name = a.str();
                if (a.left < in->size) return fail(EINVAL);
                std::string value(a.p, in->size);
                return fail(eng_.setxattr(h.nodeid, name, value, static_cast<int>(in->flags)));
            }
            case GETXATTR:
            case LISTXATTR: {
                const GetxattrIn* in = a.get<GetxattrIn>();
                std::string value;
                ssize_t r = h.opcode == GETXATTR ? eng_.getxattr(h.nodeid, a.str(), value, in->size)
                                                 : eng_.listxattr(h.nodeid, value, in->size);
                if (r < 0) return fail(static_cast<int>(-r));
                if (in->size == 0) {
                    GetxattrOut o{static_cast<uint32_t>(r), 0};
                    return send(fd, u, 0, {part(o)});
                }
                return send(fd, u, 0, {{value.data(), value.size()}});
            }
            case REMOVEXATTR: return fail(eng_.removexattr(h.nodeid, a.str()));
            case OPENDIR: {
                DirHandle* dh = nullptr;
                if (int e = eng_.opendir(h.nodeid, dh)) return fail(e);
                OpenOut o{};
                o.fh = reinterpret_cast<uint64_t>(dh);
                return send(fd, u, 0, {part(o)});
            }
            case READDIR: {
                const ReadIn* in = a.get<ReadIn>();
                auto* dh = reinterpret_cast<DirHandle*>(in->fh);
                size_t max = std::min<size_t>(in->size, out.size()), pos = 0;
                for (size_t i = in->offset; i < dh->entries.size(); ++i) {
                    const DirEntry& e = dh->entries[i];
                    size_t rec = (sizeof(Dirent) + e.name.size() + 7) & ~size_t{7};
                    if (pos + rec > max) break;
                    Dirent d{e.ino, i + 1, static_cast<uint32_t>(e.name.size()), e.type};
                    std::memcpy(out.data() + pos, &d, sizeof d);
                    std::memcpy(out.data() + pos + sizeof d, e.name.data(), e.name.size());
                    std::memset(out.data() + pos + sizeof d + e.name.size(), 0,
                                rec - sizeof d - e.name.size());
                    pos += rec;
                }
                return send(fd, u, 0, {{out.data(), pos}});
            }
            case READDIRPLUS: {
                const ReadIn* in = a.get<ReadIn>();
                auto* dh = reinterpret_cast<DirHandle*>(in->fh);
                size_t max = std::min<size_t>(in->size, out.size()), pos = 0, count = 0;
                auto rec_size = [](const DirEntry& e) {
                    return (sizeof(EntryOut) + sizeof(Dirent) + e.name.size() + 7) & ~size_t{7};
                };
                // What fits is decided first: every entry looked up must reach the kernel.
                for (size_t i = in->offset; i < dh->entries.size(); ++i, ++count) {
                    if (pos + rec_size(dh->entries[i]) > max) break;
                    pos += rec_size(dh->entries[i]);
                }
                std::vector<Entry> entries;
                eng_.plus_entries(dh, in->offset, count, entries);
                pos = 0;
                for (size_t k = 0; k < count; ++k) {
                    const DirEntry& e = dh->entries[in->offset + k];
                    size_t rec = rec_size(e);
                    EntryOut eo{};
                    if (entries[k].id) eo = entry_out(entries[k]);
                    Dirent d{e.ino, in->offset + k + 1, static_cast<uint32_t>(e.name.size()), e.type};
                    char* p = out.data() + pos;
                    std::memcpy(p, &eo, sizeof eo);
                    std::memcpy(p + sizeof eo, &d, sizeof d);
                    std::memcpy(p + sizeof eo + sizeof d, e.name.data(), e.name.size());
                    size_t used = sizeof eo + sizeof d + e.name.size();
                    std::memset(p + used, 0, rec - used);
                    pos += rec;
                }
                return send(fd, u, 0, {{out.data(), pos}});
            }
            case RELEASEDIR: {
                eng_.releasedir(reinterpret_cast<DirHandle*>(a.get<ReleaseIn>()->fh));
                return send(fd, u, 0);
            }
            case FSYNCDIR: {
                const FsyncIn* in = a.get<FsyncIn>();
                return fail(eng_.fsyncdir(h.nodeid, in->fsync_flags & FSYNC_FDATASYNC));
            }
            case FALLOCATE: {
                const FallocateIn* in = a.get<FallocateIn>();
                return fail(eng_.fallocate(reinterpret_cast<FileHandle*>(in->fh),
                                           static_cast<int>(in->mode),
                                           static_cast<off_t>(in->offset),
                                           static_cast<off_t>(in->length)));
            }
            case LSEEK: {
                const LseekIn* in = a.get<LseekIn>();
                off_t pos = 0;
                if (int e = eng_.lseek(reinterpret_cast<FileHandle*>(in->fh),
                                       static_cast<off_t>(in->offset),
                                       static_cast<int>(in->whence), pos))
                    return fail(e);
                LseekOut o{static_cast<uint64_t>(pos)};
                return send(fd, u, 0, {part(o)});
            }
            case COPY_FILE_RANGE: {
                const CopyFileRangeIn* in = a.get<CopyFileRangeIn>();
                ssize_t r = eng_.copy_file_range(
                    reinterpret_cast<FileHandle*>(in->fh_in), static_cast<off_t>(in->off_in),
                    reinterpret_cast<FileHandle*>(in->fh_out), static_cast<off_t>(in->off_out),
                    std::min<size_t>(in->len, 1u << 30), static_cast<unsigned>(in->flags));
                if (r < 0) return fail(static_cast<int>(-r));
                WriteOut o{static_cast<uint32_t>(r), 0};
                return send(fd, u, 0, {part(o)});
            }
            case SYNCFS: return fail(eng_.syncfs());
            case IOCTL: return fail(ENOTTY);  // isatty() on every open, chattr: not here
            default: return fail(ENOSYS);
        }
    } catch (const SysError& e) {
        if (h.opcode != FORGET && h.opcode != BATCH_FORGET) fail(e.err ? e.err : EIO);
    } catch (const std::bad_alloc&) {
        fail(ENOMEM);
    } catch (const std::exception&) {
        fail(EIO);
    }
}

}  // namespace sk::unionfs
