// Python bindings of the copyup area.
#include <fcntl.h>

#include "common/areas.hpp"
#include "common/py_path.hpp"
#include "copyup/copy.hpp"

namespace py = pybind11;

namespace sk {

void register_copyup(py::module_& m) {
    m.def(
        "copy_entry",
        [](const py::object& src_obj, const py::object& dst_obj, bool reflink) {
            std::string src = fs_path(src_obj), dst = fs_path(dst_obj);
            copyup::DataMethod method;
            {
                py::gil_scoped_release nogil;
                method = copyup::copy_entry_at(AT_FDCWD, src.c_str(), AT_FDCWD, dst.c_str(),
                                               reflink);
            }
            return std::string(copyup::method_name(method));
        },
        py::arg("src"), py::arg("dst"), py::kw_only(), py::arg("reflink") = true,
        "Copy one entry (a directory without its contents) keeping all metadata; returns the "
        "data method used.");

    m.def(
        "copy_tree",
        [](const py::object& src_obj, const py::object& dst_obj, bool reflink, unsigned threads) {
            std::string src = fs_path(src_obj), dst = fs_path(dst_obj);
            copyup::CopyStats s;
            {
                py::gil_scoped_release nogil;
                s = copyup::copy_tree_at(AT_FDCWD, src.c_str(), AT_FDCWD, dst.c_str(), reflink,
                                         threads);
            }
            py::dict d;
            d["files"] = s.files;
            d["dirs"] = s.dirs;
            d["symlinks"] = s.symlinks;
            d["specials"] = s.specials;
            d["hardlinks"] = s.hardlinks;
            d["bytes"] = s.bytes;
            d["reflinked"] = s.reflinked;
            return d;
        },
        py::arg("src"), py::arg("dst"), py::kw_only(), py::arg("reflink") = true,
        py::arg("threads") = 0,
        "Copy the tree at src to dst keeping all metadata and inner hardlinks; returns CopyStats. "
        "threads: 0 = one per CPU, at most 2.");
}

}  // namespace sk
