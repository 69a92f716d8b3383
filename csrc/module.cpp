// storagekit._native: the compiled core. Each area lives in its own directory under csrc/ and
// registers its functions here; this file only owns the error translation shared by all.
#include <Python.h>
#include <pybind11/pybind11.h>

#include <cstring>

#include "common/areas.hpp"
#include "common/syserror.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_native, m) {
    m.doc() = "storagekit native core: copy-up, whiteouts, changes, archives, mounts";

    static py::exception<sk::ArchiveError> archive_error(m, "ArchiveError", PyExc_ValueError);

    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const sk::SysError& e) {
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
        } catch (const sk::ArchiveError& e) {
            PyErr_SetString(archive_error.ptr(), e.what());
        } catch (const sk::ValueErr& e) {
            PyErr_SetString(PyExc_ValueError, e.what());
        }
    });

    sk::register_copyup(m);
    sk::register_whiteout(m);
    sk::register_changes(m);
    sk::register_archive(m);
    sk::register_mount(m);
    sk::register_namespaces(m);
    sk::register_thin(m);
    sk::register_union(m);
}
