// Python bindings of the archive area.
#include <pybind11/stl.h>

#include "archive/apply.hpp"
#include "archive/export.hpp"
#include "common/areas.hpp"
#include "common/py_path.hpp"

namespace py = pybind11;

namespace sk {

void register_archive(py::module_& m) {
    m.def(
        "apply_tar",
        [](int fd, py::handle root_obj, const std::string& dialect, bool same_owner,
           py::handle lowers, uint64_t max_size) {
            std::string root = fs_path(root_obj);
            ApplyOptions opt;
            opt.dialect = whiteout::parse_dialect(dialect);
            opt.same_owner = same_owner;
            if (!lowers.is_none())
                for (py::handle l : py::iter(lowers)) opt.lowers.push_back(fs_path(l));
            opt.max_size = max_size;
            ApplyResult r;
            {
                py::gil_scoped_release nogil;
                r = apply_tar(fd, root, opt);
            }
            py::dict d;
            d["size"] = r.size;
            d["entries"] = r.entries;
            d["diff_id"] = r.diff_id;
            d["compression"] = r.compression;
            return d;
        },
        py::arg("fd"), py::arg("root"), py::kw_only(), py::arg("dialect") = "none",
        py::arg("same_owner") = true, py::arg("lowers") = py::none(),
        py::arg("max_size") = 0);

    m.def(
        "export_tar",
        [](py::handle root_obj, int fd, const std::string& dialect, py::handle changes,
           const std::string& compression, py::handle parent) {
            std::string root = fs_path(root_obj);
            ExportOptions opt;
            if (!parent.is_none()) opt.parent = fs_path(parent);
            opt.dialect = whiteout::parse_dialect(dialect);
            opt.compression = parse_compression(compression);
            if (!changes.is_none()) {
                // (path, kind) pairs, as changes() gives them.
                opt.changes.emplace();
                for (py::handle item : py::iter(changes)) {
                    if (!py::isinstance<py::tuple>(item) && !py::isinstance<py::list>(item))
                        throw py::type_error("a change is a (path, kind) pair");
                    auto pair = py::reinterpret_borrow<py::sequence>(item);
                    if (pair.size() != 2 || !py::isinstance<py::int_>(pair[1]))
                        throw py::type_error("a change is a (path, kind) pair");
                    opt.changes->emplace_back(fs_path(pair[0]), pair[1].cast<int>());
                }
            }
            ExportResult r;
            {
                py::gil_scoped_release nogil;
                r = export_tar(root, fd, opt);
            }
            py::dict d;
            d["bytes"] = r.bytes;
            d["entries"] = r.entries;
            d["diff_id"] = r.diff_id;
            return d;
        },
        py::arg("root"), py::arg("fd"), py::kw_only(), py::arg("dialect") = "none",
        py::arg("changes") = py::none(), py::arg("compression") = "none",
        py::arg("parent") = py::none());
}

}  // namespace sk
