// Reading the mount table with libmount, which undoes mountinfo's octal escapes (a space in a
// mount point is "\040" there) and splits the option fields.
#include <libmount/libmount.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <memory>

#include "common/syserror.hpp"
#include "mount/mount.hpp"

namespace sk {
namespace {

constexpr const char* kMountinfo = "/proc/self/mountinfo";

struct TableUnref {
    void operator()(libmnt_table* t) const { mnt_unref_table(t); }
};
struct IterFree {
    void operator()(libmnt_iter* i) const { mnt_free_iter(i); }
};

std::string text(const char* s) { return s ? std::string(s) : std::string(); }

// libmount returns negative errno values, or 1 for some parse failures.
[[noreturn]] void throw_libmount(int rc) { throw SysError(rc < 0 ? -rc : EINVAL, kMountinfo); }

MountEntry entry_of(libmnt_fs* fs) {
    MountEntry e;
    e.id = mnt_fs_get_id(fs);
    e.parent_id = mnt_fs_get_parent_id(fs);
    dev_t dev = mnt_fs_get_devno(fs);
    e.major = major(dev);
    e.minor = minor(dev);
    e.root = text(mnt_fs_get_root(fs));
    e.target = text(mnt_fs_get_target(fs));
    e.fstype = text(mnt_fs_get_fstype(fs));
    e.source = text(mnt_fs_get_source(fs));
    e.options = text(mnt_fs_get_options(fs));
    e.vfs_options = text(mnt_fs_get_vfs_options(fs));
    e.fs_options = text(mnt_fs_get_fs_options(fs));
    return e;
}

}  // namespace

MountTable read_mount_table() {
    std::unique_ptr<libmnt_table, TableUnref> table(mnt_new_table());
    if (!table) throw SysError(ENOMEM, kMountinfo);
    if (int rc = mnt_table_parse_file(table.get(), kMountinfo); rc != 0) throw_libmount(rc);

    std::unique_ptr<libmnt_iter, IterFree> it(mnt_new_iter(MNT_ITER_FORWARD));
    if (!it) throw SysError(ENOMEM, kMountinfo);

    MountTable out;
    out.reserve(static_cast<size_t>(mnt_table_get_nents(table.get())));
    libmnt_fs* fs = nullptr;
    int rc;
    while ((rc = mnt_table_next_fs(table.get(), it.get(), &fs)) == 0) out.push_back(entry_of(fs));
    if (rc < 0) throw_libmount(rc);
    return out;
}

}  // namespace sk
