// Turning the C++ error types of syserror.hpp into Python exceptions, for each extension
// module: pybind11 only applies a module-local translator to that module's own functions.
#pragma once

#include <Python.h>
#include <pybind11/pybind11.h>

#include <cstring>

#include "common/syserror.hpp"

namespace sk {

// The Python type storagekit._native.ArchiveError, one for all modules (each module has its
// own copy of this variable: symbols are hidden).
inline PyObject*& archive_error_type() {
    static PyObject* type = nullptr;
    return type;
}

inline void register_error_translation(pybind11::handle archive_error) {
    archive_error.inc_ref();  // kept for the life of the process, like the module itself
    archive_error_type() = archive_error.ptr();
    pybind11::register_local_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const SysError& e) {
            // OSError(errno, strerror, filename, winerror, filename2) picks the right subclass.
            PyObject* args;
            if (e.path2.empty())
                args = Py_BuildValue("(iss)", e.err, std::strerror(e.err), e.path.c_str());
            else
                args = Py_BuildValue("(issOs)", e.err, std::strerror(e.err), e.path.c_str(),
                                     Py_None, e.path2.c_str());
            if (args) {
                PyErr_SetObject(PyExc_OSError, args);
                Py_DECREF(args);
            }
        } catch (const ArchiveError& e) {
            PyErr_SetString(archive_error_type(), e.what());
        } catch (const ValueErr& e) {
            PyErr_SetString(PyExc_ValueError, e.what());
        }
    });
}

}  // namespace sk
