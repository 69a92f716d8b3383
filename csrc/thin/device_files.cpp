#include "thin/device_files.hpp"

#include <cerrno>
#include <string>

#include "common/syserror.hpp"
#include "thin/error.hpp"

namespace sk::thin {

void DeviceFiles::add(uint32_t dev, uint64_t size) {
    std::lock_guard lk(mu_);
    auto it = files_.find(dev);
    if (it != files_.end() && !it->second.hidden)
        throw Error(Fault::shown, "thin device file " + std::to_string(dev) + " is shown already");
    if (it != files_.end()) {  // hidden, still open: shown again with its handles
        it->second.hidden = false;
        it->second.size = size;
        return;
    }
    files_[dev] = Entry{size, 0, false};
}

bool DeviceFiles::hide(uint32_t dev) {
    std::lock_guard lk(mu_);
    auto it = files_.find(dev);
    if (it == files_.end() || it->second.hidden)
        throw Error(Fault::not_shown, "thin device file " + std::to_string(dev) + " is not shown");
    if (it->second.opens == 0) {
        files_.erase(it);
        return true;
    }
    it->second.hidden = true;
    return false;
}

bool DeviceFiles::wait_released(uint32_t dev, std::chrono::milliseconds wait) {
    std::unique_lock lk(mu_);
    // A file released by a loop device reaches us asynchronously, a moment after the detach.
    return released_.wait_for(lk, wait, [&] {
        auto e = files_.find(dev);
        return e == files_.end() || !e->second.hidden;
    });
}

std::optional<uint64_t> DeviceFiles::size(uint32_t dev, bool include_hidden) const {
    std::lock_guard lk(mu_);
    auto it = files_.find(dev);
    if (it == files_.end() || (it->second.hidden && !include_hidden)) return std::nullopt;
    return it->second.size;
}

std::vector<std::pair<uint32_t, uint64_t>> DeviceFiles::shown() const {
    std::lock_guard lk(mu_);
    std::vector<std::pair<uint32_t, uint64_t>> out;
    for (auto& [dev, e] : files_)
        if (!e.hidden) out.emplace_back(dev, e.size);
    return out;
}

uint32_t DeviceFiles::opens(uint32_t dev) const {
    std::lock_guard lk(mu_);
    auto it = files_.find(dev);
    return it == files_.end() ? 0 : it->second.opens;
}

bool DeviceFiles::any_open() const {
    std::lock_guard lk(mu_);
    for (auto& [dev, e] : files_)
        if (e.opens) return true;
    return false;
}

bool DeviceFiles::open(uint32_t dev) {
    std::lock_guard lk(mu_);
    auto it = files_.find(dev);
    if (it == files_.end() || it->second.hidden) return false;
    it->second.opens++;
    return true;
}

void DeviceFiles::release(uint32_t dev) {
    {
        std::lock_guard lk(mu_);
        auto it = files_.find(dev);
        if (it == files_.end() || it->second.opens == 0) return;
        if (--it->second.opens == 0 && it->second.hidden) files_.erase(it);
    }
    released_.notify_all();
}

}  // namespace sk::thin
