// storagekit._native: the compiled core. Each area lives in its own directory under csrc/ and
// registers its functions in one of three extension modules, split by the libraries they need,
// so that a process loads only what it uses (loading libarchive with its codecs, OpenSSL and
// libfuse costs ~3 ms, a tenth of a container boot through the CLI):
//
//   storagekit._native   copy-up, whiteouts, changes, mounts, namespaces  (libmount)
//   storagekit._archive  layer tars                                     (libarchive, OpenSSL)
//   storagekit._fuse     the thin engine                               (libfuse3)
//
// _native is the one to import: a name it does not define is looked up in the other two,
// loaded on first use (PEP 562 module __getattr__), so callers never name them.
#include <Python.h>
#include <pybind11/pybind11.h>

#include <string>

#include "common/areas.hpp"
#include "common/translate.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_native, m) {
    m.doc() =
        "storagekit native core: copy-up, whiteouts, changes, mounts and namespaces; layer "
        "tars (storagekit._archive) and the thin engine (storagekit._fuse) through it";

    static py::exception<sk::ArchiveError> archive_error(m, "ArchiveError", PyExc_ValueError);
    static py::exception<sk::KindError> engine_error(m, "EngineError", PyExc_OSError);
    engine_error.attr("__doc__") =
        "An OSError with a meaning of its own, named by .kind (see storagekit/_native.pyi).";
    sk::register_error_translation(archive_error, engine_error);

    sk::register_copyup(m);
    sk::register_whiteout(m);
    sk::register_changes(m);
    sk::register_mount(m);
    sk::register_namespaces(m);

    py::handle self = m;
    m.attr("__getattr__") = py::cpp_function(
        [self](const std::string& name) -> py::object {
            if (name.rfind("__", 0) != 0) {  // dunder probes (copy, pickle...) load nothing
                // _fuse first: the thin daemon wants it alone and starts often, while
                // what needs _archive (image and layer tars) is slow anyway.
                for (const char* sub : {"storagekit._fuse", "storagekit._archive"}) {
                    py::module_ mod = py::module_::import(sub);
                    if (py::hasattr(mod, name.c_str())) {
                        py::object value = mod.attr(name.c_str());
                        self.attr(name.c_str()) = value;  // found once, then a plain attribute
                        return value;
                    }
                }
            }
            throw py::attribute_error("module 'storagekit._native' has no attribute '" + name +
                                      "'");
        },
        py::arg("name"));
}
