// Python bindings of the namespaces area: spawn_container, and open_in_root for what the
// runtime reads from an image before the container starts (its /etc/passwd and /etc/group).
#include <pybind11/stl.h>

#include "common/areas.hpp"
#include "common/in_root.hpp"
#include "common/py_path.hpp"
#include "common/syserror.hpp"
#include "namespaces/container.hpp"

namespace py = pybind11;

namespace sk {

void register_namespaces(py::module_& m) {
    m.def(
        "spawn_container",
        [](py::handle rootfs, py::handle argv, py::handle env, py::handle cwd, uint32_t uid,
           uint32_t gid, const std::vector<uint32_t>& groups, py::handle hostname,
           bool user_namespace, std::optional<std::pair<uint32_t, uint32_t>> uid_map,
           std::optional<std::pair<uint32_t, uint32_t>> gid_map, bool network,
           bool readonly_rootfs, int stdin_fd, int stdout_fd, int stderr_fd) {
            // Arguments and environment are OS strings as much as the paths are.
            ContainerSpec spec;
            spec.rootfs = fs_path(rootfs);
            spec.argv = fs_paths(argv);
            spec.env = fs_paths(env);
            spec.cwd = fs_path(cwd);
            spec.uid = uid;
            spec.gid = gid;
            spec.groups.assign(groups.begin(), groups.end());
            if (!hostname.is_none()) spec.hostname = fs_path(hostname);
            spec.user_namespace = user_namespace;
            if (uid_map) spec.uid_range = IdRange{uid_map->first, uid_map->second};
            if (gid_map) spec.gid_range = IdRange{gid_map->first, gid_map->second};
            spec.host_network = network;
            spec.readonly_rootfs = readonly_rootfs;
            spec.stdio[0] = stdin_fd;
            spec.stdio[1] = stdout_fd;
            spec.stdio[2] = stderr_fd;
            py::gil_scoped_release nogil;
            return spawn_container(spec);
        },
        py::arg("rootfs"), py::arg("argv"), py::arg("env"), py::kw_only(), py::arg("cwd") = "/",
        py::arg("uid") = 0, py::arg("gid") = 0, py::arg("groups") = std::vector<uint32_t>{},
        py::arg("hostname") = py::none(), py::arg("user_namespace") = false,
        py::arg("uid_map") = py::none(), py::arg("gid_map") = py::none(),
        py::arg("network") = false, py::arg("readonly_rootfs") = false, py::arg("stdin") = 0,
        py::arg("stdout") = 1, py::arg("stderr") = 2,
        "Start argv[0] (looked up in env's PATH inside the rootfs) as pid 1 of new mount, pid, "
        "uts, ipc and (unless network) net namespaces, plus a user namespace with "
        "user_namespace (root mapped to the caller, or ids 0..count-1 to the host ranges "
        "uid_map and gid_map give as (first, count)); returns its pid once it has exec'd. The caller "
        "waits for it. Failures before exec raise OSError naming the step.");

    m.def(
        "open_in_root",
        [](int rootfd, py::handle path_obj, int flags) {
            std::string path = fs_path(path_obj);
            int fd;
            {
                py::gil_scoped_release nogil;
                fd = open_in_root(rootfd, path.c_str(), flags);
            }
            if (fd < 0) throw_errno(path);
            return fd;
        },
        py::arg("rootfd"), py::arg("path"), py::arg("flags"),
        "openat2(rootfd, path, flags | O_CLOEXEC) resolved as if rootfd were / (no symlink, "
        "'..' or /proc magic link leaves it); returns the new fd.");
}

}  // namespace sk
