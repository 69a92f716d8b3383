#include "namespaces/id_maps.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "common/syserror.hpp"
#include "common/unique_fd.hpp"

namespace sk::ns {
namespace {

void write_proc_file(pid_t pid, const char* name, const std::string& text) {
    std::string path = "/proc/" + std::to_string(pid) + "/" + name;
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) throw_errno("container: " + path);
    // The kernel takes a map in a single write.
    ssize_t n = ::write(fd.get(), text.data(), text.size());
    if (n < 0) throw_errno("container: " + path);
    if (static_cast<size_t>(n) != text.size()) throw SysError(EIO, "container: " + path);
}

}  // namespace

void write_id_maps(pid_t pid, uid_t host_uid, gid_t host_gid) {
    write_proc_file(pid, "uid_map", "0 " + std::to_string(host_uid) + " 1\n");
    write_proc_file(pid, "setgroups", "deny");
    write_proc_file(pid, "gid_map", "0 " + std::to_string(host_gid) + " 1\n");
}

void write_id_maps(pid_t pid, const IdRange& uids, const IdRange& gids) {
    auto line = [](const IdRange& r) {
        return "0 " + std::to_string(r.host) + " " + std::to_string(r.count) + "\n";
    };
    write_proc_file(pid, "uid_map", line(uids));
    write_proc_file(pid, "gid_map", line(gids));
}

}  // namespace sk::ns
