// Filesystem paths from Python: str (encoded like os.fsencode, so undecodable names survive
// as surrogate escapes), bytes or os.PathLike.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

namespace sk {

inline std::string fs_path(const pybind11::handle& obj) {
    PyObject* out = nullptr;
    if (!PyUnicode_FSConverter(obj.ptr(), &out)) throw pybind11::error_already_set();
    pybind11::object bytes = pybind11::reinterpret_steal<pybind11::object>(out);
    return std::string(PyBytes_AS_STRING(out), static_cast<size_t>(PyBytes_GET_SIZE(out)));
}

// The inverse: a name from the filesystem as os.fsdecode returns it.
inline pybind11::str fs_str(const std::string& s) {
    PyObject* o = PyUnicode_DecodeFSDefaultAndSize(s.data(), static_cast<Py_ssize_t>(s.size()));
    if (!o) throw pybind11::error_already_set();
    return pybind11::reinterpret_steal<pybind11::str>(o);
}

}  // namespace sk
