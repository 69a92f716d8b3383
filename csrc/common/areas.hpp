// Each area of the native core registers its Python bindings through one function, so an area
// can be read (and changed) without touching the others. The module that holds the area
// calls it: csrc/modules/native.cpp (copy-up, whiteouts, changes, mounts, namespaces),
// archive.cpp (archives), fuse.cpp (the thin engine).
#pragma once

#include <pybind11/pybind11.h>

namespace sk {

void register_copyup(pybind11::module_& m);
void register_whiteout(pybind11::module_& m);
void register_changes(pybind11::module_& m);
void register_archive(pybind11::module_& m);
void register_mount(pybind11::module_& m);
void register_namespaces(pybind11::module_& m);
void register_thin(pybind11::module_& m);

}  // namespace sk
