// libarchive converts entry names between the archive's charset (UTF-8 for PAX) and the
// calling thread's locale. Pinning the thread to C.UTF-8 for the duration of an apply or
// export makes names byte-exact whatever locale the embedding process runs in.
#pragma once

#include <locale.h>

namespace sk {

class Utf8ThreadLocale {
public:
    Utf8ThreadLocale() {
        loc_ = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(0));
        if (loc_) old_ = uselocale(loc_);
    }
    ~Utf8ThreadLocale() {
        if (!loc_) return;
        uselocale(old_);
        freelocale(loc_);
    }
    Utf8ThreadLocale(const Utf8ThreadLocale&) = delete;
    Utf8ThreadLocale& operator=(const Utf8ThreadLocale&) = delete;

private:
    locale_t loc_ = static_cast<locale_t>(0);
    locale_t old_ = static_cast<locale_t>(0);
};

}  // namespace sk
