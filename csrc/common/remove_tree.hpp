// Removing an entry and everything below it, relative to an open directory, with *at()
// calls only: a symlink is removed, never followed, and depth costs heap, not stack.
#pragma once

#include <string>

namespace sk {

// Removes entry `name` of directory dirfd (a file, symlink, device or a whole directory
// tree). Returns false if it did not exist. `label` is dirfd's path, for error messages.
bool remove_tree_at(int dirfd, const std::string& name, const std::string& label);

// Removes every entry of directory dirfd, keeping the directory itself.
void empty_dir_at(int dirfd, const std::string& label);

}  // namespace sk
