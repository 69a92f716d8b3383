#include "archive/entry_path.hpp"

#include <vector>

#include "common/syserror.hpp"

namespace sk {

EntryPath normalize_entry_path(std::string_view raw, const char* what) {
    auto fail = [&](const std::string& why) -> void {
        throw ArchiveError(std::string(what) + " '" + std::string(raw.substr(0, 512)) +
                           (raw.size() > 512 ? "...'" : "'") + " " + why);
    };
    if (raw.find('\0') != std::string_view::npos) fail("contains a NUL byte");

    EntryPath out;
    out.path.reserve(raw.size());
    // Start offsets of the components kept so far, so ".." can drop the last one.
    std::vector<std::size_t> starts;
    std::size_t i = 0;
    while (i < raw.size()) {
        std::size_t j = raw.find('/', i);
        if (j == std::string_view::npos) j = raw.size();
        std::string_view comp = raw.substr(i, j - i);
        i = j + 1;
        if (comp.empty() || comp == ".") continue;
        if (comp == "..") {
            if (starts.empty()) fail("escapes the layer root");
            std::size_t s = starts.back();
            starts.pop_back();
            out.path.resize(s ? s - 1 : 0);
            continue;
        }
        if (comp.size() > kMaxEntryName)
            fail("has a component longer than " + std::to_string(kMaxEntryName) + " bytes");
        if (!out.path.empty()) out.path += '/';
        starts.push_back(out.path.size());
        out.path += comp;
    }
    if (out.path.size() > kMaxEntryPath)
        fail("is longer than " + std::to_string(kMaxEntryPath) + " bytes");
    out.base_pos = starts.empty() ? 0 : starts.back();
    return out;
}

}  // namespace sk
