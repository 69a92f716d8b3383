#include <fcntl.h>
#include <sys/stat.h>

#include <string>

#include "copyup/copy.hpp"
#include "copyup/copy_node.hpp"
#include "copyup/node_error.hpp"

namespace sk::copyup {

CopyStats& CopyStats::operator+=(const CopyStats& o) {
    files += o.files;
    dirs += o.dirs;
    symlinks += o.symlinks;
    specials += o.specials;
    hardlinks += o.hardlinks;
    bytes += o.bytes;
    reflinked += o.reflinked;
    return *this;
}

DataMethod copy_entry_at(int src_dirfd, const char* src_name, int dst_dirfd, const char* dst_name,
                         bool reflink, FsCaps* caps, struct stat* dst_st) {
    FsCaps own_caps;
    std::vector<char> buf;
    NodeCtx ctx{reflink, caps ? caps : &own_caps, &buf, /*strip_inherited=*/true};
    ctx.dst_st = dst_st;
    try {
        struct stat st;
        if (::fstatat(src_dirfd, src_name, &st, AT_SYMLINK_NOFOLLOW) < 0) fail(Side::src);
        switch (st.st_mode & S_IFMT) {
            case S_IFREG: {
                UniqueFd src = open_src_file(src_dirfd, src_name);
                if (!src) fail(Side::src);
                if (::fstat(src.get(), &st) < 0) fail(Side::src);
                if (!S_ISREG(st.st_mode)) fail(Side::src, EAGAIN);  // replaced meanwhile
                return copy_regular(src.get(), st, dst_dirfd, dst_name, ctx);
            }
            case S_IFDIR: {
                UniqueFd src = open_src_dir(src_dirfd, src_name);
                if (!src) fail(Side::src);
                st = stat_dir(src.get()).st;
                UniqueFd dst = make_dir(st, dst_dirfd, dst_name, ctx);
                finish_dir(src.get(), st, dst.get());
                if (dst_st && ::fstat(dst.get(), dst_st) < 0) fail(Side::dst);
                return DataMethod::none;
            }
            case S_IFLNK:
                copy_symlink(src_dirfd, src_name, st, dst_dirfd, dst_name, ctx);
                break;
            default:
                copy_special(src_dirfd, src_name, st, dst_dirfd, dst_name, ctx);
                break;
        }
        if (dst_st && ::fstatat(dst_dirfd, dst_name, dst_st, AT_SYMLINK_NOFOLLOW) < 0)
            fail(Side::dst);
        return DataMethod::none;
    } catch (const NodeError& e) {
        throw to_sys_error(e, src_name, dst_name);
    }
}

}  // namespace sk::copyup
