// A directory of a branch as the union reads it: aufs whiteouts (".wh.<name>", where the
// branch's whiteouts count) apart from the entries, bookkeeping (".wh..wh.*") left out, and
// every other entry with its type, looked up where the filesystem does not report it.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdint>
#include <string_view>
#include <type_traits>

#include "common/dir_entries.hpp"
#include "whiteout/whiteout.hpp"

namespace sk::union_fs {

// Calls on_entry(name, d_type, d_ino) for each entry (it may return false to stop) and
// on_whiteout(hidden name) for each whiteout, from dirfd's current offset on. An entry gone
// before its type could be looked up is left out. Returns 0 or an errno value.
template <class OnEntry, class OnWhiteout>
int for_each_branch_entry(int dirfd, bool whiteouts, OnEntry&& on_entry,
                          OnWhiteout&& on_whiteout) {
    return for_each_entry(dirfd, [&](std::string_view nm, unsigned char type, uint64_t ino) {
        if (nm.starts_with(whiteout::kPrefix)) {
            if (whiteouts && !nm.starts_with(whiteout::kMetaPrefix) &&
                nm.size() > whiteout::kPrefix.size())
                on_whiteout(nm.substr(whiteout::kPrefix.size()));
            return true;
        }
        if (type == DT_UNKNOWN) {
            struct stat st;
            if (::fstatat(dirfd, nm.data(), &st, AT_SYMLINK_NOFOLLOW) < 0) return true;
            type = static_cast<unsigned char>(IFTODT(st.st_mode));
        }
        if constexpr (std::is_void_v<std::invoke_result_t<OnEntry&, std::string_view,
                                                          unsigned char, uint64_t>>) {
            on_entry(nm, type, ino);
            return true;
        } else {
            return on_entry(nm, type, ino);
        }
    });
}

}  // namespace sk::union_fs
