// The thin devices a FUSE server shows as regular files: each id has a size (the pool itself
// has none) and a count of open handles, so that a device is only hidden once nothing uses it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace sk::thin {

class DeviceFiles {
public:
    // Show dev with this size. EEXIST when it is already shown.
    void add(uint32_t dev, uint64_t size);
    // Hide dev: lookups fail from now on; open handles keep working until released. Returns
    // whether none was open (the entry is then gone). ENOENT when dev is not shown.
    bool hide(uint32_t dev);
    // Wait up to `wait` for the handles of a hidden dev to be released; false if some remain.
    bool wait_released(uint32_t dev, std::chrono::milliseconds wait);

    // The size of a shown device (or of a hidden one that still has open handles when
    // include_hidden).
    std::optional<uint64_t> size(uint32_t dev, bool include_hidden = false) const;
    std::vector<std::pair<uint32_t, uint64_t>> shown() const;  // (id, size), ascending
    uint32_t opens(uint32_t dev) const;
    bool any_open() const;

    bool open(uint32_t dev);  // false: dev is not shown
    void release(uint32_t dev);

private:
    struct Entry {
        uint64_t size = 0;
        uint32_t opens = 0;
        bool hidden = false;
    };
    mutable std::mutex mu_;
    std::condition_variable released_;
    std::map<uint32_t, Entry> files_;
};

}  // namespace sk::thin
