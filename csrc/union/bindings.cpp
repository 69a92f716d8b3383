// Python bindings of the union engine: the blocking serve loop the engine's process runs.
#include <string>
#include <vector>

#include "common/areas.hpp"
#include "union/serve.hpp"

namespace py = pybind11;

namespace sk {
namespace {

std::string fs_path(py::handle obj) {
    PyObject* bytes = nullptr;
    if (!PyUnicode_FSConverter(obj.ptr(), &bytes)) throw py::error_already_set();
    return std::string(py::reinterpret_steal<py::bytes>(bytes));
}

}  // namespace

void register_union(py::module_& m) {
    m.def(
        "union_serve",
        [](py::handle mountpoint, py::handle branches, bool readonly, int ready_fd,
           unsigned threads, bool passthrough) {
            unionfs::ServeOptions o;
            o.mountpoint = fs_path(mountpoint);
            for (py::handle b : py::iter(branches)) o.branches.push_back(fs_path(b));
            o.readonly = readonly;
            o.ready_fd = ready_fd;
            o.threads = threads;
            o.passthrough = passthrough;
            py::gil_scoped_release nogil;
            unionfs::serve(o);
        },
        py::arg("mountpoint"), py::arg("branches"), py::kw_only(), py::arg("readonly") = false,
        py::arg("ready_fd") = -1, py::arg("threads") = 4, py::arg("passthrough") = true,
        "Mount the union of branches (top first) on mountpoint and serve it until it is "
        "unmounted. Blocks; see storagekit/_native.pyi.");
}

}  // namespace sk
