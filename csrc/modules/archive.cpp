// storagekit._archive: layer tars (libarchive, OpenSSL). Reached through storagekit._native;
// see modules/native.cpp.
#include <pybind11/pybind11.h>

#include "common/areas.hpp"
#include "common/translate.hpp"

PYBIND11_MODULE(_archive, m) {
    m.doc() = "storagekit native layer tars (use storagekit._native)";
    sk::register_error_translation_of_native();
    sk::register_archive(m);
}
