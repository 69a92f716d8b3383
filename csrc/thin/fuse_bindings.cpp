// Python bindings of the FUSE server of a thin pool: storagekit._native.ThinFuse.
#include <pybind11/stl.h>

#include <chrono>
#include <map>

#include "common/py_path.hpp"
#include "thin/fuse_server.hpp"

namespace py = pybind11;

namespace sk {
namespace {

std::chrono::milliseconds millis(double seconds) {
    if (seconds < 0) seconds = 0;
    return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

}  // namespace

void register_thin_fuse(py::module_& m) {
    using thin::FuseServer;
    using thin::Pool;
    py::class_<FuseServer>(m, "ThinFuse",
                           "A pool's thin devices served as files over FUSE.")
        .def(py::init([](Pool& pool, const py::object& mountpoint, unsigned max_threads,
                         const std::string& fsname) {
                 std::string mnt = fs_path(mountpoint);
                 thin::FuseServerOptions o;
                 o.max_threads = max_threads;
                 o.fsname = fsname;
                 py::gil_scoped_release nogil;
                 return std::make_unique<FuseServer>(pool, mnt, o);
             }),
             py::arg("pool"), py::arg("mountpoint"), py::kw_only(), py::arg("max_threads") = 8,
             py::arg("fsname") = "storagekit-thin", py::keep_alive<1, 2>())
        .def(
            "add",
            [](FuseServer& s, uint32_t dev, uint64_t size) {
                py::gil_scoped_release nogil;
                s.show(dev, size);
            },
            py::arg("dev"), py::arg("size"))
        .def(
            "remove",
            [](FuseServer& s, uint32_t dev, double timeout) {
                py::gil_scoped_release nogil;
                return s.hide(dev, millis(timeout));
            },
            py::arg("dev"), py::arg("timeout") = 5.0)
        .def("files",
             [](FuseServer& s) {
                 std::map<uint32_t, uint64_t> out;
                 for (auto& [dev, size] : s.files().shown()) out[dev] = size;
                 return out;
             })
        .def(
            "opens", [](FuseServer& s, uint32_t dev) { return s.files().opens(dev); },
            py::arg("dev"))
        .def(
            "stop",
            [](FuseServer& s, double grace) {
                py::gil_scoped_release nogil;
                return s.stop(millis(grace));
            },
            py::arg("grace") = 2.0)
        .def_property_readonly("mountpoint",
                               [](FuseServer& s) { return fs_str(s.mountpoint()); })
        .def_property_readonly("device", [](FuseServer& s) { return static_cast<uint64_t>(s.device()); })
        .def_property_readonly("running", [](FuseServer& s) { return s.running(); })
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](FuseServer& s, const py::args&) {
            py::gil_scoped_release nogil;
            s.stop(std::chrono::seconds(2));
            return false;
        });
}

}  // namespace sk
