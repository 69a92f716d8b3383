// storagekit._fuse: the thin-provisioning engine (libfuse3). The union filesystem engine runs
// as a program of its own (csrc/programs/uniond.cpp).
// Reached through storagekit._native; see modules/native.cpp.
#include <pybind11/pybind11.h>

#include "common/areas.hpp"
#include "common/translate.hpp"

PYBIND11_MODULE(_fuse, m) {
    m.doc() = "storagekit native thin engine (use storagekit._native)";
    sk::register_error_translation_of_native();
    sk::register_thin(m);
}
