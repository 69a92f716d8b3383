// Python bindings of the whiteout area.
#include <fcntl.h>

#include <optional>
#include <stdexcept>
#include <string>

#include <pybind11/stl.h>

#include "common/areas.hpp"
#include "common/syserror.hpp"
#include "common/unique_fd.hpp"
#include "whiteout/remove_tree.hpp"
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
        [](const std::string& name) -> std::optional<std::string> {
            auto t = wh::target(name);
            if (!t) return std::nullopt;
            return std::string(*t);
        },
        py::arg("name"));

    m.def(
        "make_whiteout",
        [](const std::string& dirpath, const std::string& name, const std::string& dialect) {
            wh::Dialect d = wh::parse_dialect(dialect);
            py::gil_scoped_release nogil;
            UniqueFd dir = open_dir(dirpath);
            wh::make_whiteout_at(dir.get(), name, d, dirpath);
        },
        py::arg("dirpath"), py::arg("name"), py::arg("dialect"));

    m.def(
        "set_opaque",
        [](const std::string& dirpath, const std::string& dialect) {
            wh::Dialect d = wh::parse_dialect(dialect);
            py::gil_scoped_release nogil;
            UniqueFd dir = open_dir(dirpath);
            wh::set_opaque_fd(dir.get(), d, dirpath);
        },
        py::arg("dirpath"), py::arg("dialect"));

    m.def(
        "is_whiteout",
        [](const std::string& dirpath, const std::string& name, const std::string& dialect) {
            wh::Dialect d = wh::parse_dialect(dialect);
            py::gil_scoped_release nogil;
            UniqueFd dir = open_dir(dirpath);
            return wh::is_whiteout_at(dir.get(), name, d, dirpath);
        },
        py::arg("dirpath"), py::arg("name"), py::arg("dialect"));

    m.def(
        "is_opaque",
        [](const std::string& dirpath, const std::string& dialect) {
            wh::Dialect d = wh::parse_dialect(dialect);
            py::gil_scoped_release nogil;
            UniqueFd dir = open_dir(dirpath);
            return wh::is_opaque_fd(dir.get(), d, dirpath);
        },
        py::arg("dirpath"), py::arg("dialect"));

    m.def(
        "convert_whiteouts",
        [](const std::string& root, const std::string& src, const std::string& dst) {
            wh::Dialect from = wh::parse_dialect(src);
            wh::Dialect to = wh::parse_dialect(dst);
            py::gil_scoped_release nogil;
            UniqueFd dir = open_dir(root);
            return wh::convert_tree(dir.get(), from, to, root);
        },
        py::arg("root"), py::arg("src"), py::arg("dst"));

    m.def(
        "remove_tree",
        [](std::string path) {
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
