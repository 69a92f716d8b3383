// Python bindings of the archive area.
#include <pybind11/stl.h>

#include "archive/apply.hpp"
#include "archive/export.hpp"
#include "common/areas.hpp"

namespace py = pybind11;

namespace sk {

void register_archive(py::module_& m) {
    m.def(
        "apply_tar",
        [](int fd, const std::string& root, const std::string& dialect, bool same_owner) {
            ApplyOptions opt;
            opt.dialect = whiteout::parse_dialect(dialect);
            opt.same_owner = same_owner;
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
        py::arg("same_owner") = true);

    m.def(
        "export_tar",
        [](const std::string& root, int fd, const std::string& dialect,
           std::optional<std::vector<std::pair<std::string, int>>> changes,
           const std::string& compression) {
            ExportOptions opt;
            opt.dialect = whiteout::parse_dialect(dialect);
            opt.compression = parse_compression(compression);
            opt.changes = std::move(changes);
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
        py::arg("changes") = py::none(), py::arg("compression") = "none");
}

}  // namespace sk
