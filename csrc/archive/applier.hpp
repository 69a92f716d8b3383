// The state of one apply_tar() run (internal to the archive area).
//
// Every entry is created relative to its parent directory, which RootDirs resolves inside
// the root; the entry's own name is only ever handled with *at() calls that do not follow
// it. Directory modes and times are restored at the end, deepest first, so that writing
// their contents does not disturb them; opaque directories of the "none" dialect are also
// emptied at the end, once every entry of this layer is known.
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <sys/types.h>
#include <time.h>

#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "archive/apply.hpp"
#include "archive/entry_path.hpp"
#include "archive/entry_xattrs.hpp"
#include "archive/raw_pax_names.hpp"
#include "archive/root_dirs.hpp"

namespace sk {

class TarInput;

// The metadata of one tar entry, as it will be restored.
struct NodeMeta {
    uid_t uid = 0;
    gid_t gid = 0;
    mode_t perm = 0;             // permission bits with setuid/setgid/sticky
    struct timespec times[2] {};  // atime, mtime (UTIME_OMIT when the entry has none)
    std::vector<EntryXattr> xattrs;
};

class Applier {
public:
    Applier(int rootfd, std::string label, const ApplyOptions& options);
    ApplyResult run(int fd);

private:
    // The stream, entry by entry.
    void apply_entry(struct archive* in, struct archive_entry* e);
    [[noreturn]] void header_failed(TarInput& in, int rc);
    bool warning_is_harmless(struct archive* in) const;
    const char* hardlink_of(struct archive_entry* e) const;
    const char* symlink_of(struct archive_entry* e) const;
    bool in_bookkeeping(const EntryPath& p);
    void apply_whiteout(const EntryPath& p, std::string_view victim_name, struct archive_entry* e);
    void apply_opaque(const EntryPath& p, struct archive_entry* e);
    void remember(std::string_view path);
    const RootDirs::Dir& parent_dir(std::string_view dir, bool create);
    int dir_fd(std::string_view dir, bool create) { return parent_dir(dir, create).fd; }

    // Nodes (apply_nodes.cpp).
    void make_node(const EntryPath& p, struct archive* in, struct archive_entry* e);
    void make_regular(const RootDirs::Dir& dir, const EntryPath& p, struct archive* in,
                      int64_t size, const NodeMeta& m);
    void make_marker_file(const EntryPath& p, struct archive_entry* e);
    void make_dir(const RootDirs::Dir& dir, const EntryPath& p, const NodeMeta& m);
    void make_symlink(int dirfd, const EntryPath& p, const char* target, const NodeMeta& m);
    void make_hardlink(int dirfd, const EntryPath& p, const char* target);
    // Copies the target of a hardlink up from opt_.lowers; false if no lower shows it
    // (lower_copy.cpp).
    bool copy_up_from_lowers(const EntryPath& target);
    void make_special(int dirfd, const EntryPath& p, mode_t type, dev_t rdev,
                      const NodeMeta& m);
    int create_file(int dirfd, const EntryPath& p, mode_t mode = 0600);
    bool clear_entry(int dirfd, const EntryPath& p);
    NodeMeta meta_of(struct archive_entry* e, bool is_dir);
    void set_owner_at(int dirfd, const EntryPath& p, const NodeMeta& m);
    bool owner_is_default(const RootDirs::Dir& dir, const NodeMeta& m) const {
        return m.uid == euid_ && m.gid == dir.child_gid;
    }
    std::string label_of(std::string_view path) const { return dirs_.label_of(path); }

    // The end of the stream.
    void empty_opaque_dirs();
    void restore_dir_metadata();

    [[noreturn]] void fail(const std::string& why) const;

    struct DirFix {
        std::string path;
        mode_t perm;
        struct timespec times[2];
        dev_t dev;
        ino_t ino;
        std::size_t depth;
        std::string access_acl;  // system.posix_acl_access, "" if none
    };

    int root_;
    TarInput* input_ = nullptr;
    ApplyOptions opt_;
    RootDirs dirs_;
    std::string current_;  // the raw name of the entry being applied
    RawPaxNames::Names raw_;  // byte-exact PAX names of that entry, when known
    // Paths of this stream's entries and their parents, for whiteout and opaque semantics.
    // Most streams never need them: they are collected cheaply and indexed on first use.
    std::vector<std::string> new_paths_;
    std::unordered_set<std::string> layer_paths_;
    bool layer_indexed_ = false;
    bool in_layer(const std::string& path);
    std::vector<std::string> opaque_dirs_;
    std::vector<DirFix> dir_fixes_;
    std::unordered_map<std::string, std::size_t> dir_fix_index_;
    uid_t euid_;
    mode_t umask_;  // 0777 when unknown: then every mode is set explicitly
    uint64_t bytes_ = 0;
    uint64_t declared_ = 0;  // sizes the regular-file entries declare, against max_size
    uint64_t entries_ = 0;
};

}  // namespace sk
