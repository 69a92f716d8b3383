// Python bindings of the mount area: constants, mount/umount/bind, the mount table and the
// overlay mount through the new mount API.
#include <sys/mount.h>

#include <optional>

#include "common/areas.hpp"
#include "common/py_path.hpp"
#include "mount/mount.hpp"

namespace py = pybind11;

namespace sk {
namespace {

py::dict mount_info(const MountEntry& e) {
    py::dict d;
    d["id"] = e.id;
    d["parent_id"] = e.parent_id;
    d["major"] = e.major;
    d["minor"] = e.minor;
    d["root"] = fs_str(e.root);
    d["target"] = fs_str(e.target);
    d["fstype"] = fs_str(e.fstype);
    d["source"] = fs_str(e.source);
    d["options"] = fs_str(e.options);
    d["vfs_options"] = fs_str(e.vfs_options);
    d["fs_options"] = fs_str(e.fs_options);
    return d;
}

py::list mount_infos(const std::vector<MountEntry>& entries) {
    py::list out;
    for (const MountEntry& e : entries) out.append(mount_info(e));
    return out;
}

void add_constants(py::module_& m) {
    m.attr("MS_RDONLY") = static_cast<unsigned long>(MS_RDONLY);
    m.attr("MS_NOSUID") = static_cast<unsigned long>(MS_NOSUID);
    m.attr("MS_NODEV") = static_cast<unsigned long>(MS_NODEV);
    m.attr("MS_NOEXEC") = static_cast<unsigned long>(MS_NOEXEC);
    m.attr("MS_REMOUNT") = static_cast<unsigned long>(MS_REMOUNT);
    m.attr("MS_BIND") = static_cast<unsigned long>(MS_BIND);
    m.attr("MS_MOVE") = static_cast<unsigned long>(MS_MOVE);
    m.attr("MS_REC") = static_cast<unsigned long>(MS_REC);
    m.attr("MS_NOATIME") = static_cast<unsigned long>(MS_NOATIME);
    m.attr("MS_RELATIME") = static_cast<unsigned long>(MS_RELATIME);
    m.attr("MS_UNBINDABLE") = static_cast<unsigned long>(MS_UNBINDABLE);
    m.attr("MS_PRIVATE") = static_cast<unsigned long>(MS_PRIVATE);
    m.attr("MS_SLAVE") = static_cast<unsigned long>(MS_SLAVE);
    m.attr("MS_SHARED") = static_cast<unsigned long>(MS_SHARED);
    m.attr("MNT_FORCE") = static_cast<int>(MNT_FORCE);
    m.attr("MNT_DETACH") = static_cast<int>(MNT_DETACH);
    m.attr("MNT_EXPIRE") = static_cast<int>(MNT_EXPIRE);
    m.attr("UMOUNT_NOFOLLOW") = static_cast<int>(UMOUNT_NOFOLLOW);
}

}  // namespace

void register_mount(py::module_& m) {
    add_constants(m);

    m.def(
        "mount",
        [](py::handle source, py::handle target, py::handle fstype, unsigned long flags,
           py::handle data) {
            std::string src = fs_path(source), tgt = fs_path(target);
            auto type = fs_path_or_none(fstype);
            auto opts = fs_path_or_none(data);
            py::gil_scoped_release nogil;
            mount_fs(src, tgt, type ? type->c_str() : nullptr, flags,
                     opts ? opts->c_str() : nullptr);
        },
        py::arg("source"), py::arg("target"), py::arg("fstype"), py::arg("flags") = 0,
        py::arg("data") = py::none(), "mount(2); fstype and data may be None.");

    m.def(
        "umount",
        [](py::handle target, int flags) {
            std::string tgt = fs_path(target);
            py::gil_scoped_release nogil;
            umount_fs(tgt, flags);
        },
        py::arg("target"), py::arg("flags") = 0, "umount2(2).");

    m.def(
        "bind",
        [](py::handle source, py::handle target, bool readonly, bool recursive) {
            std::string src = fs_path(source), tgt = fs_path(target);
            py::gil_scoped_release nogil;
            bind_mount(src, tgt, readonly, recursive);
        },
        py::arg("source"), py::arg("target"), py::kw_only(), py::arg("readonly") = false,
        py::arg("recursive") = false,
        "Bind source onto target. A read-only bind is read-only from the moment it appears "
        "(submounts too with recursive) and keeps its other flags (nosuid, nodev, ...).");

    m.def(
        "mount_table",
        []() {
            MountTable table;
            {
                py::gil_scoped_release nogil;
                table = read_mount_table();
            }
            return mount_infos(table);
        },
        "The calling process's mount table, parsed by libmount from /proc/self/mountinfo.");

    m.def(
        "find_mount",
        [](py::handle path) {
            std::string p = fs_path(path);
            MountEntry e;
            {
                py::gil_scoped_release nogil;
                e = find_mount(p);
            }
            return mount_info(e);
        },
        py::arg("path"),
        "The mount visible at path's real path: the one its lookups end in.");

    m.def(
        "mounts_under",
        [](py::handle path) {
            std::string p = fs_path(path);
            std::vector<MountEntry> entries;
            {
                py::gil_scoped_release nogil;
                entries = mounts_under(p);
            }
            return mount_infos(entries);
        },
        py::arg("path"),
        "Mounts whose target is path or below it, in the order to unmount them: deepest "
        "first, the upper of stacked mounts first. A missing path has none.");

    m.def(
        "is_mountpoint",
        [](py::handle path) {
            std::string p = fs_path(path);
            py::gil_scoped_release nogil;
            return is_mountpoint(p);
        },
        py::arg("path"),
        "Is a mount visible at path (true for a directory bound onto itself; false for a "
        "missing path)?");

    m.def(
        "umount_tree",
        [](py::handle path, bool detach) {
            std::string p = fs_path(path);
            py::gil_scoped_release nogil;
            return umount_tree(p, detach);
        },
        py::arg("path"), py::kw_only(), py::arg("detach") = false,
        "Unmount every mount at or under path, deepest first, until none is left; returns "
        "how many unmounts were done.");

    m.def(
        "fsmount_overlay",
        [](py::handle target, py::handle lowerdirs, py::handle upperdir, py::handle workdir,
           py::handle options, bool readonly) {
            std::string tgt = fs_path(target);
            OverlaySpec spec;
            spec.lowerdirs = fs_paths(lowerdirs);
            spec.upperdir = fs_path_or_none(upperdir);
            spec.workdir = fs_path_or_none(workdir);
            if (!options.is_none()) spec.options = fs_paths(options);
            spec.readonly = readonly;
            py::gil_scoped_release nogil;
            mount_overlay(tgt, spec);
        },
        py::arg("target"), py::arg("lowerdirs"), py::arg("upperdir") = py::none(),
        py::arg("workdir") = py::none(), py::arg("options") = py::none(),
        py::arg("readonly") = false,
        "Mount an overlay on target with fsopen/fsconfig(\"lowerdir+\")/fsmount/move_mount "
        "(no one-page option limit). lowerdirs are uppermost first. On failure the kernel's "
        "message is part of the OSError's filename: '<target>: overlay[fs]: <message>'.");

    m.def(
        "mount_in_dir",
        [](py::handle dir, py::handle source, py::handle target, py::handle fstype,
           unsigned long flags, py::handle data) {
            std::string d = fs_path(dir), src = fs_path(source), tgt = fs_path(target);
            auto type = fs_path_or_none(fstype);
            auto opts = fs_path_or_none(data);
            py::gil_scoped_release nogil;
            mount_fs_in_dir(d, src, tgt, type ? type->c_str() : nullptr, flags,
                            opts ? opts->c_str() : nullptr);
        },
        py::arg("dir"), py::arg("source"), py::arg("target"), py::arg("fstype"),
        py::arg("flags") = 0, py::arg("data") = py::none(),
        "mount(2) with relative paths (in source and data) resolved against dir; the "
        "calling process's working directory is not changed.");

    m.def(
        "has_new_mount_api",
        []() {
            py::gil_scoped_release nogil;
            return has_overlay_fsconfig_append();
        },
        "Can overlays be mounted with fsopen/fsconfig(\"lowerdir+\")/fsmount (kernel 6.8+)?");

    m.def(
        "supports_d_type",
        [](py::handle dir) {
            std::string d = fs_path(dir);
            py::gil_scoped_release nogil;
            return supports_d_type(d);
        },
        py::arg("dir"),
        "Does dir's filesystem report file types in directory entries (overlay needs it)? "
        "Creates and removes a probe file in dir.");
}

}  // namespace sk
