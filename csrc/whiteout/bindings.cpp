// Python bindings of the whiteout area.
#include <fcntl.h>

#include <stdexcept>
#include <string>

#include "common/areas.hpp"
#include "common/py_path.hpp"
#include "common/remove_tree.hpp"
#include "common/syserror.hpp"
#include "common/unique_fd.hpp"
#include "whiteout/whiteout.hpp"

namespace py = pybind11;

namespace sk {
namespace {

UniqueFd open_dir(const std::string& path) {
    UniqueFd fd(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) throw_errno(path);
    return fd;
}

}  // namespace

void register_whiteout(py::module_& m) {
    namespace wh = sk::whiteout;
    m.attr("WH_PREFIX") = std::string(wh::kPrefix);
    m.attr("WH_META_PREFIX") = std::string(wh::kMetaPrefix);
    m.attr("WH_OPAQUE") = std::string(wh::kOpaque);

    m.def(
        "whiteout_target",
        [](py::handle name_obj) -> py::object {
            std::string name = fs_name(name_obj);
            auto t = wh::target(name);
            if (!t) return py::none();
            return fs_str(*t);
        },
        py::arg("name"));

    m.def(
        "make_whiteout",
        [](py::handle dir_obj, py::handle name_obj, const std::string& dialect) {
            std::string dirpath = fs_path(dir_obj), name = fs_path(name_obj);
            wh::Dialect d = wh::parse_dialect(dialect);
            py::gil_scoped_release nogil;
            UniqueFd dir = open_dir(dirpath);
            wh::make_whiteout_at(dir.get(), name, d, dirpath);
        },
        py::arg("dirpath"), py::arg("name"), py::arg("dialect"));

    m.def(
        "set_opaque",
        [](py::handle dir_obj, const std::string& dialect) {
            std::string dirpath = fs_path(dir_obj);
            wh::Dialect d = wh::parse_dialect(dialect);
            py::gil_scoped_release nogil;
            UniqueFd dir = open_dir(dirpath);
            wh::set_opaque_fd(dir.get(), d, dirpath);
        },
        py::arg("dirpath"), py::arg("dialect"));

    m.def(
        "is_whiteout",
        [](py::handle dir_obj, py::handle name_obj, const std::string& dialect) {
            std::string dirpath = fs_path(dir_obj), name = fs_path(name_obj);
            wh::Dialect d = wh::parse_dialect(dialect);
            py::gil_scoped_release nogil;
            UniqueFd dir = open_dir(dirpath);
            return wh::is_whiteout_at(dir.get(), name, d, dirpath);
        },
        py::arg("dirpath"), py::arg("name"), py::arg("dialect"));

    m.def(
        "is_opaque",
        [](py::handle dir_obj, const std::string& dialect) {
            std::string dirpath = fs_path(dir_obj);
            wh::Dialect d = wh::parse_dialect(dialect);
            py::gil_scoped_release nogil;
            UniqueFd dir = open_dir(dirpath);
            return wh::is_opaque_fd(dir.get(), d, dirpath);
        },
        py::arg("dirpath"), py::arg("dialect"));

    m.def(
        "convert_whiteouts",
        [](py::handle root_obj, const std::string& src, const std::string& dst) {
            std::string root = fs_path(root_obj);
            wh::Dialect from = wh::parse_dialect(src);
            wh::Dialect to = wh::parse_dialect(dst);
            py::gil_scoped_release nogil;
            UniqueFd dir = open_dir(root);
            return wh::convert_tree(dir.get(), from, to, root);
        },
        py::arg("root"), py::arg("src"), py::arg("dst"));

    m.def(
        "remove_tree",
        [](py::handle path_obj) {
            std::string path = fs_path(path_obj);
            while (path.size() > 1 && path.back() == '/') path.pop_back();
            auto slash = path.find_last_of('/');
            std::string parent = slash == std::string::npos ? "." : path.substr(0, slash);
            std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
            if (parent.empty()) parent = "/";
            if (name.empty() || name == "." || name == "..")
                throw std::invalid_argument("remove_tree needs a path that names an entry: " + path);
            py::gil_scoped_release nogil;
            UniqueFd dir = open_dir(parent);
            return remove_tree_at(dir.get(), name, parent);
        },
        py::arg("path"));
}

}  // namespace sk
