// Turning the C++ error types of syserror.hpp into Python exceptions, for each extension
// module: pybind11 only applies a module-local translator to that module's own functions.
#pragma once

#include <Python.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "common/syserror.hpp"

namespace sk {

// The Python types storagekit._native.ArchiveError and storagekit._native.EngineError, one of
// each for all modules (each module has its own copy of these variables: symbols are hidden).
struct ErrorTypes {
    PyObject* archive_error = nullptr;
    PyObject* engine_error = nullptr;
};

inline ErrorTypes& error_types() {
    static ErrorTypes types;
    return types;
}

namespace detail {

// A path as os functions report it: decoded like os.fsdecode, so that a name that is not
// UTF-8 comes back as the str that names it.
inline pybind11::object fs_filename(const std::string& path) {
    return pybind11::reinterpret_steal<pybind11::object>(
        PyUnicode_DecodeFSDefaultAndSize(path.data(), static_cast<Py_ssize_t>(path.size())));
}

// A message for people, decoded as UTF-8: a byte that is not UTF-8 (in a hostile archive's
// entry name, in a path) shows as \xNN instead of making the error itself fail.
inline pybind11::object message_text(const std::string& message) {
    return pybind11::reinterpret_steal<pybind11::object>(PyUnicode_DecodeUTF8(
        message.data(), static_cast<Py_ssize_t>(message.size()), "backslashreplace"));
}

inline void raise_with_message(PyObject* type, const char* message) {
    pybind11::object text = message_text(message);
    if (text) PyErr_SetObject(type, text.ptr());
}

// Sets the exception type(err, message, filename[, None, filename2]) (or whatever failed on
// the way), with .kind = kind unless null. type(...) of OSError itself picks the errno's
// subclass.
inline void raise_os_error(PyObject* type, int err, const std::string& message,
                           pybind11::object filename, const std::string& path2 = {},
                           const char* kind = nullptr) {
    pybind11::object text = message_text(message);
    if (!text || !filename) return;
    pybind11::object args;
    if (path2.empty()) {
        args = pybind11::reinterpret_steal<pybind11::object>(
            PyTuple_Pack(3, pybind11::int_(err).ptr(), text.ptr(), filename.ptr()));
    } else {
        pybind11::object filename2 = fs_filename(path2);
        if (!filename2) return;
        args = pybind11::reinterpret_steal<pybind11::object>(PyTuple_Pack(
            5, pybind11::int_(err).ptr(), text.ptr(), filename.ptr(), Py_None, filename2.ptr()));
    }
    if (!args) return;
    auto exc = pybind11::reinterpret_steal<pybind11::object>(
        PyObject_Call(type, args.ptr(), nullptr));
    if (!exc) return;
    if (kind) {
        auto k = pybind11::reinterpret_steal<pybind11::object>(PyUnicode_FromString(kind));
        if (!k || PyObject_SetAttrString(exc.ptr(), "kind", k.ptr()) < 0) return;
    }
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
}

}  // namespace detail

inline void register_error_translation(pybind11::handle archive_error,
                                       pybind11::handle engine_error) {
    // Kept for the life of the process, like the module itself.
    archive_error.inc_ref();
    engine_error.inc_ref();
    error_types() = {archive_error.ptr(), engine_error.ptr()};
    pybind11::register_local_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const pybind11::builtin_exception&) {
            throw;  // pybind11's own (type_error, ...): its translator knows them
        } catch (const KindError& e) {
            // No path: filename None, so that the message reads alone.
            pybind11::object file =
                e.path.empty() ? pybind11::none() : detail::fs_filename(e.path);
            detail::raise_os_error(error_types().engine_error, e.err, e.message, file, {}, e.kind);
        } catch (const SysError& e) {
            // OSError(errno, strerror, filename, winerror, filename2) picks the right subclass.
            detail::raise_os_error(PyExc_OSError, e.err, std::strerror(e.err),
                                   detail::fs_filename(e.path), e.path2);
        } catch (const ArchiveError& e) {
            detail::raise_with_message(error_types().archive_error, e.what());
        } catch (const std::invalid_argument& e) {  // ValueErr, and any other
            detail::raise_with_message(PyExc_ValueError, e.what());
        } catch (const std::runtime_error& e) {  // libarchive's failures, as pybind11 maps them
            detail::raise_with_message(PyExc_RuntimeError, e.what());
        }
    });
}

// For the modules reached through storagekit._native: its error types, so that Python sees
// one ArchiveError and one EngineError whichever module raised them.
inline void register_error_translation_of_native() {
    pybind11::module_ native = pybind11::module_::import("storagekit._native");
    register_error_translation(native.attr("ArchiveError"), native.attr("EngineError"));
}

}  // namespace sk
