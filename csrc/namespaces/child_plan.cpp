#include "namespaces/child_plan.hpp"

#include <sys/stat.h>

#include <climits>
#include <cstdlib>

#include "common/syserror.hpp"

namespace sk::ns {
namespace {

// Without PATH in the container's environment, search what Docker and runc set by default.
constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

std::string container_path(const std::vector<std::string>& env) {
    for (const std::string& var : env)
        if (var.starts_with("PATH=")) return var.substr(5);
    return kDefaultPath;
}

std::string real_directory(const std::string& path) {
    char buf[PATH_MAX];
    if (!::realpath(path.c_str(), buf)) throw_errno("container: rootfs " + path);
    struct stat st;
    if (::stat(buf, &st) != 0) throw_errno("container: rootfs " + path);
    if (!S_ISDIR(st.st_mode)) throw SysError(ENOTDIR, "container: rootfs " + path);
    return buf;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
    std::vector<char*> out;
    out.reserve(strings.size() + 1);
    for (std::string& s : strings) out.push_back(s.data());
    out.push_back(nullptr);
    return out;
}

void check_id(uint32_t id) {
    if (id == static_cast<uint32_t>(-1))
        throw ValueErr("spawn_container: " + std::to_string(id) +
                       " is not a valid user or group id");
}

// A range must hold valid ids only, and not host root: mapping container ids onto it would
// give them the host's root.
void check_range(const IdRange& r) {
    if (r.count == 0 || r.host == 0 ||
        static_cast<uint64_t>(r.host) + r.count > static_cast<uint32_t>(-1))
        throw ValueErr("spawn_container: the id range " + std::to_string(r.host) + "+" +
                       std::to_string(r.count) + " is empty, holds host root or invalid ids");
}

std::string join_ids(const std::vector<gid_t>& ids) {
    std::string out;
    for (gid_t id : ids) {
        if (!out.empty()) out += ',';
        out += std::to_string(id);
    }
    return out;
}

}  // namespace

std::vector<std::string> exec_candidates(const std::string& command, const std::string& path) {
    if (command.find('/') != std::string::npos) return {command};
    std::vector<std::string> out;
    std::string::size_type start = 0;
    while (true) {
        std::string::size_type end = path.find(':', start);
        std::string dir = path.substr(start, end == std::string::npos ? end : end - start);
        out.push_back(dir.empty() ? command : dir + "/" + command);
        if (end == std::string::npos) break;
        start = end + 1;
    }
    return out;
}

ChildPlan::ChildPlan(const ContainerSpec& spec)
    : rootfs(real_directory(spec.rootfs)),
      argv_strings(spec.argv),
      env_strings(spec.env),
      cwd(spec.cwd),
      uid(spec.uid),
      gid(spec.gid),
      groups(spec.groups),
      user_namespace(spec.user_namespace),
      uid_range(spec.uid_range),
      gid_range(spec.gid_range),
      new_network(!spec.host_network),
      readonly_rootfs(spec.readonly_rootfs) {
    if (argv_strings.empty()) throw ValueErr("spawn_container: argv must not be empty");
    // (uid_t)-1 means "leave unchanged" to setresuid and friends: asked for as an id, it
    // would leave the container running as the caller (root).
    for (uid_t id : {uid, gid}) check_id(id);
    for (gid_t id : groups) check_id(id);
    for (const auto* list : {&argv_strings, &env_strings})
        for (const std::string& s : *list)
            if (s.find('\0') != std::string::npos)
                throw ValueErr("spawn_container: embedded null byte in argv or env");
    argv = pointers(argv_strings);
    envp = pointers(env_strings);
    exec_paths = exec_candidates(argv_strings[0], container_path(env_strings));
    exec_step = "exec '" + argv_strings[0] + "'";

    if (cwd.empty()) cwd = "/";
    cwd_step = "chdir " + cwd;
    if (spec.hostname) {
        set_hostname = true;
        hostname = *spec.hostname;
        hostname_step = "sethostname " + hostname;
    }
    if (uid_range.has_value() != gid_range.has_value())
        throw ValueErr("spawn_container: uid_map and gid_map go together");
    for (const auto* range : {&uid_range, &gid_range})
        if (*range) check_range(**range);
    // A user namespace mapping root to the caller is made with setgroups denied (so that the
    // one-line gid map needs no privilege): the process keeps the groups it has, and asking
    // for others fails. With a range of ids, setgroups is allowed and done, as without one.
    set_groups = !user_namespace || !groups.empty() || gid_range.has_value();
    groups_step = "setgroups [" + join_ids(groups) + "]";
    gid_step = "setgid " + std::to_string(gid);
    uid_step = "setuid " + std::to_string(uid);
    for (int i = 0; i < 3; ++i) stdio[i] = spec.stdio[i];
}

}  // namespace sk::ns
