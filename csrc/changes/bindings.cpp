// Python bindings of the changes area.
#include "changes/changes.hpp"
#include "common/areas.hpp"
#include "common/py_path.hpp"

namespace py = pybind11;

namespace sk {

void register_changes(py::module_& m) {
    m.attr("CHANGE_MODIFY") = static_cast<int>(changes::Kind::modify);
    m.attr("CHANGE_ADD") = static_cast<int>(changes::Kind::add);
    m.attr("CHANGE_DELETE") = static_cast<int>(changes::Kind::del);

    m.def(
        "changes",
        [](const py::object& layer_obj, const py::object& parent_obj) {
            std::string layer = fs_path(layer_obj);
            std::optional<std::string> parent;
            if (!parent_obj.is_none()) parent = fs_path(parent_obj);
            std::vector<changes::Change> found;
            {
                py::gil_scoped_release nogil;
                found = changes::scan(layer, parent);
            }
            py::list out(found.size());
            for (size_t i = 0; i < found.size(); ++i)
                out[i] = py::make_tuple(fs_str(found[i].path), static_cast<int>(found[i].kind));
            return out;
        },
        py::arg("layer"), py::arg("parent"),
        "Changes of tree `layer` against tree `parent` (None: all added), as Docker's "
        "archive.ChangesDirs: sorted [(path, kind)].");

    m.def(
        "tree_size",
        [](const py::object& root_obj) {
            std::string root = fs_path(root_obj);
            std::pair<uint64_t, uint64_t> r;
            {
                py::gil_scoped_release nogil;
                r = changes::tree_size(root);
            }
            return py::make_tuple(r.first, r.second);
        },
        py::arg("root"), "(bytes of regular-file data, inodes) under root, hardlinks once.");

    m.def(
        "paths_size",
        [](const py::object& root_obj, const py::iterable& paths_obj) {
            std::string root = fs_path(root_obj);
            std::vector<std::string> paths;
            for (const py::handle& p : paths_obj) paths.push_back(fs_path(p));
            uint64_t total;
            {
                py::gil_scoped_release nogil;
                total = changes::paths_size(root, paths);
            }
            return total;
        },
        py::arg("root"), py::arg("paths"),
        "Sum of st_size of the regular files among root/paths, each inode once.");
}

}  // namespace sk
