// Paths (and other OS strings: names, arguments, environment) between Python and native code,
// as the os module passes them: str encoded like os.fsencode (undecodable bytes survive as
// surrogate escapes), bytes, or os.PathLike in; str decoded like os.fsdecode out. An embedded
// NUL is a ValueError, as for os functions.
#pragma once

#include <pybind11/pybind11.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sk {

inline std::string fs_path(pybind11::handle obj) {
    PyObject* out = nullptr;
    if (!PyUnicode_FSConverter(obj.ptr(), &out)) throw pybind11::error_already_set();
    auto bytes = pybind11::reinterpret_steal<pybind11::object>(out);
    return std::string(PyBytes_AS_STRING(out), static_cast<size_t>(PyBytes_GET_SIZE(out)));
}

// The bytes of a name that is examined rather than handed to the kernel, NUL bytes and all
// (so that the examination can refuse them in its own terms).
inline std::string fs_name(pybind11::handle obj) {
    auto os_str = pybind11::reinterpret_steal<pybind11::object>(PyOS_FSPath(obj.ptr()));
    if (!os_str) throw pybind11::error_already_set();
    pybind11::object bytes = os_str;
    if (PyUnicode_Check(os_str.ptr())) {
        bytes = pybind11::reinterpret_steal<pybind11::object>(
            PyUnicode_EncodeFSDefault(os_str.ptr()));
        if (!bytes) throw pybind11::error_already_set();
    }
    return std::string(PyBytes_AS_STRING(bytes.ptr()),
                       static_cast<size_t>(PyBytes_GET_SIZE(bytes.ptr())));
}

inline std::optional<std::string> fs_path_or_none(pybind11::handle obj) {
    if (obj.is_none()) return std::nullopt;
    return fs_path(obj);
}

// A sequence of paths; a lone str or bytes is refused rather than taken letter by letter.
inline std::vector<std::string> fs_paths(pybind11::handle seq) {
    if (pybind11::isinstance<pybind11::str>(seq) || pybind11::isinstance<pybind11::bytes>(seq))
        throw pybind11::type_error("expected a list of paths, got a single string");
    std::vector<std::string> out;
    for (pybind11::handle item : pybind11::iter(seq)) out.push_back(fs_path(item));
    return out;
}

inline pybind11::str fs_str(std::string_view s) {
    PyObject* o = PyUnicode_DecodeFSDefaultAndSize(s.data(), static_cast<Py_ssize_t>(s.size()));
    if (!o) throw pybind11::error_already_set();
    return pybind11::reinterpret_steal<pybind11::str>(o);
}

}  // namespace sk
