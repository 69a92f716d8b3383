#include "union/session.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>

#include "common/syserror.hpp"
#include "union/fuse_proto.hpp"
#include "union/ops.hpp"
#include "union/reply.hpp"

namespace sk::union_fs {
namespace {

using namespace sk::fuse;

constexpr uint32_t kMaxWrite = 1u << 20;
constexpr uint16_t kMaxPages = kMaxWrite / 4096;
// A request is at most its header, the write arguments and max_write bytes of data.
constexpr size_t kInBuf = kMaxWrite + 8192;

}  // namespace

Session::Session(Engine& engine, UniqueFd dev, unsigned max_stack_depth)
    : eng_(engine),
      dev_(std::move(dev)),
      max_stack_depth_(max_stack_depth),
      done_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (!done_) throw_errno("eventfd");
}

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

int Session::open_backing(int fd, int& id) {
    BackingMap m{};
    m.fd = fd;
    int r = ::ioctl(dev_.get(), DEV_IOC_BACKING_OPEN, &m);
    if (r < 0) return errno;
    if (r == 0) return EIO;  // ids start at 1
    id = r;
    return 0;
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
        worker_done();
        return;
    }
    while (lead()) {
        // The leader reads and serves requests itself, so that the kernel keeps waking the
        // same thread (on the CPU the caller is on, as the scheduler learns) rather than
        // every waiting thread in turn. Before anything that may take a while it hands the
        // reading over (blocking()), and rejoins the followers once done.
        while (t_leader) {
            ssize_t n = ::read(fd, in.data(), in.size());
            if (n < 0) {
                if (errno == EINTR || errno == EAGAIN || errno == ENOENT) continue;
                // ENODEV: unmounted; anything else: the connection is unusable
                std::lock_guard lk(lead_mu_);
                t_leader = false;
                stopping_ = true;
                lead_cv_.notify_all();
                break;
            }
            if (static_cast<size_t>(n) < sizeof(InHeader)) continue;
            handle(fd, in.data(), static_cast<size_t>(n), out);
        }
    }
    worker_done();
}

void Session::worker_done() {
    if (live_.fetch_sub(1) != 1) return;
    uint64_t one = 1;
    ssize_t r = ::write(done_.get(), &one, sizeof one);
    (void)r;
    std::lock_guard lk(init_mu_);
    init_cv_.notify_all();
}

thread_local bool Session::t_leader = false;

bool Session::lead() {
    std::unique_lock lk(lead_mu_);
    lead_cv_.wait(lk, [&] { return !led_ || stopping_; });
    if (stopping_) return false;
    led_ = true;
    t_leader = true;
    return true;
}

void Session::blocking() {
    if (!t_leader) return;
    t_leader = false;
    std::lock_guard lk(lead_mu_);
    led_ = false;
    lead_cv_.notify_one();
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
                    DO_READDIRPLUS | ASYNC_DIO | PARALLEL_DIROPS |
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
    eng_.set_blocking_notice(this);
    send(fd, unique, 0, {part(o)});
    std::lock_guard lk(init_mu_);
    init_done_ = true;
    init_cv_.notify_all();
}

void Session::handle(int fd, const char* buf, size_t len, std::vector<char>& out) {
    const InHeader& h = *reinterpret_cast<const InHeader*>(buf);
    counts_[h.opcode & 63].fetch_add(1, std::memory_order_relaxed);
    RequestArgs args(buf + sizeof(InHeader), len - sizeof(InHeader));
    Request r{*this, eng_, fd, h, args, out};
    Handler op = handler_for(h.opcode);
    if (!op) return r.reply(ENOSYS);
    // A handler replies once; when it cannot get that far, the reply says why (FORGETs have
    // none).
    const bool answers = h.opcode != FORGET && h.opcode != BATCH_FORGET;
    try {
        op(r);
    } catch (const Malformed&) {
        if (answers) r.reply(EINVAL);
    } catch (const std::bad_alloc&) {
        if (answers) r.reply(ENOMEM);
    } catch (const std::exception&) {
        if (answers) r.reply(EIO);
    }
}

}  // namespace sk::union_fs
