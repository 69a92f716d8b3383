// Python bindings of the thin-provisioning engine: storagekit._native.ThinPool.
#include <pybind11/stl.h>

#include "common/areas.hpp"
#include "common/py_path.hpp"
#include "common/syserror.hpp"
#include "thin/pool.hpp"

namespace py = pybind11;

namespace sk {

void register_thin_fuse(py::module_& m);  // fuse_bindings.cpp

namespace {

using thin::Pool;
using thin::PoolOptions;

py::dict status_dict(const thin::PoolStatus& s) {
    py::dict d;
    d["transaction_id"] = s.transaction_id;
    d["used_metadata_blocks"] = s.used_metadata_blocks;
    d["total_metadata_blocks"] = s.total_metadata_blocks;
    d["used_data_blocks"] = s.used_data_blocks;
    d["total_data_blocks"] = s.total_data_blocks;
    d["held_metadata_root"] = s.held_root ? py::object(py::int_(s.held_root)) : py::none();
    d["mode"] = s.mode;
    d["discards"] = s.discards;
    d["no_space"] = s.no_space;
    d["needs_check"] = s.needs_check;
    d["metadata_low_watermark"] = s.metadata_low_watermark;
    d["data_block_size"] = s.data_block_sectors;
    d["low_water_mark"] = s.low_water_mark;
    d["low_water_mark_reached"] = s.low_water_mark_reached;
    d["time"] = s.time;
    d["devices"] = s.devices;
    d["commits"] = s.commits;
    d["last_commit_blocks_written"] = s.last_commit_blocks_written;
    d["metadata_blocks_written"] = s.metadata_blocks_written;
    d["transaction_open"] = s.transaction_open;
    d["line"] = s.line;
    return d;
}

py::dict device_dict(const thin::DeviceStatus& s) {
    py::dict d;
    d["id"] = s.id;
    d["mapped_blocks"] = s.mapped_blocks;
    d["mapped_sectors"] = s.mapped_sectors;
    d["highest_mapped_sector"] =
        s.highest_mapped_sector ? py::object(py::int_(*s.highest_mapped_sector)) : py::none();
    d["transaction_id"] = s.transaction_id;
    d["creation_time"] = s.creation_time;
    d["snapshotted_time"] = s.snapshotted_time;
    d["line"] = s.line;
    return d;
}

PoolOptions options(uint64_t low_water_mark, bool skip_block_zeroing, bool ignore_discard,
                    bool no_discard_passdown, bool error_if_no_space, double commit_interval,
                    uint64_t max_transaction_blocks, size_t cache_blocks, double no_space_timeout) {
    PoolOptions o;
    o.no_space_timeout = no_space_timeout;
    o.low_water_mark = low_water_mark;
    o.skip_block_zeroing = skip_block_zeroing;
    o.ignore_discard = ignore_discard;
    o.no_discard_passdown = no_discard_passdown;
    o.error_if_no_space = error_if_no_space;
    o.commit_interval = commit_interval;
    o.max_transaction_blocks = max_transaction_blocks;
    o.cache_blocks = cache_blocks;
    return o;
}

}  // namespace

void register_thin(py::module_& m) {
    py::class_<Pool>(m, "ThinPool",
                     "A thin pool with dm-thin's semantics and on-disk metadata format.")
        .def_static(
            "create",
            [](const py::object& metadata, const py::object& data, uint32_t data_block_size,
               uint64_t low_water_mark, bool skip_block_zeroing, bool ignore_discard,
               bool no_discard_passdown, bool error_if_no_space, bool read_only,
               std::optional<uint64_t> metadata_size, std::optional<uint64_t> data_size,
               double commit_interval, uint64_t max_transaction_blocks, size_t cache_blocks,
               double no_space_timeout) {
                std::string mp = fs_path(metadata), dp = fs_path(data);
                PoolOptions o = options(low_water_mark, skip_block_zeroing, ignore_discard,
                                        no_discard_passdown, error_if_no_space, commit_interval,
                                        max_transaction_blocks, cache_blocks, no_space_timeout);
                o.data_block_sectors = data_block_size;
                o.read_only = read_only;
                o.metadata_size = metadata_size.value_or(0);
                o.data_size = data_size.value_or(0);
                py::gil_scoped_release nogil;
                return Pool::create(mp, dp, o);
            },
            py::arg("metadata"), py::arg("data"), py::kw_only(), py::arg("data_block_size") = 128,
            py::arg("low_water_mark") = 0, py::arg("skip_block_zeroing") = false,
            py::arg("ignore_discard") = false, py::arg("no_discard_passdown") = false,
            py::arg("error_if_no_space") = false, py::arg("read_only") = false,
            py::arg("metadata_size") = py::none(), py::arg("data_size") = py::none(),
            py::arg("commit_interval") = 1.0, py::arg("max_transaction_blocks") = 0,
            py::arg("cache_blocks") = 4096,
            py::arg("no_space_timeout") = 60.0)
        .def_static(
            "open",
            [](const py::object& metadata, const py::object& data, uint64_t low_water_mark,
               bool skip_block_zeroing, bool ignore_discard, bool no_discard_passdown,
               bool error_if_no_space, bool read_only, double commit_interval,
               uint64_t max_transaction_blocks, size_t cache_blocks, double no_space_timeout) {
                std::string mp = fs_path(metadata), dp = fs_path(data);
                PoolOptions o = options(low_water_mark, skip_block_zeroing, ignore_discard,
                                        no_discard_passdown, error_if_no_space, commit_interval,
                                        max_transaction_blocks, cache_blocks, no_space_timeout);
                o.read_only = read_only;
                py::gil_scoped_release nogil;
                return Pool::open(mp, dp, o);
            },
            py::arg("metadata"), py::arg("data"), py::kw_only(), py::arg("low_water_mark") = 0,
            py::arg("skip_block_zeroing") = false, py::arg("ignore_discard") = false,
            py::arg("no_discard_passdown") = false, py::arg("error_if_no_space") = false,
            py::arg("read_only") = false, py::arg("commit_interval") = 1.0,
            py::arg("max_transaction_blocks") = 0, py::arg("cache_blocks") = 4096,
            py::arg("no_space_timeout") = 60.0)
        .def(
            "message",
            [](Pool& p, const std::string& msg) {
                py::gil_scoped_release nogil;
                p.message(msg);
            },
            py::arg("message"))
        .def("status",
             [](Pool& p) {
                 thin::PoolStatus s;
                 {
                     py::gil_scoped_release nogil;
                     s = p.status();
                 }
                 return status_dict(s);
             })
        .def("status_line",
             [](Pool& p) {
                 thin::PoolStatus s;
                 {
                     py::gil_scoped_release nogil;
                     s = p.status();
                 }
                 return s.line;
             })
        .def(
            "device_status",
            [](Pool& p, uint32_t dev) {
                thin::DeviceStatus s;
                {
                    py::gil_scoped_release nogil;
                    s = p.device_status(dev);
                }
                return device_dict(s);
            },
            py::arg("dev"))
        .def("devices",
             [](Pool& p) {
                 py::gil_scoped_release nogil;
                 return p.devices();
             })
        .def(
            "mappings",
            [](Pool& p, uint32_t dev) {
                py::gil_scoped_release nogil;
                return p.mappings(dev);
            },
            py::arg("dev"))
        .def(
            "read",
            [](Pool& p, uint32_t dev, uint64_t offset, size_t length) {
                py::bytes out(nullptr, length);
                char* buf = PyBytes_AS_STRING(out.ptr());
                {
                    py::gil_scoped_release nogil;
                    p.read(dev, offset, reinterpret_cast<uint8_t*>(buf), length);
                }
                return out;
            },
            py::arg("dev"), py::arg("offset"), py::arg("length"))
        .def(
            "write",
            [](Pool& p, uint32_t dev, uint64_t offset, const py::buffer& data) {
                py::buffer_info info = data.request();
                if (info.ndim > 1 && info.strides.back() != info.itemsize)
                    throw ValueErr("write: data must be a contiguous buffer");
                auto ptr = static_cast<const uint8_t*>(info.ptr);
                size_t len = static_cast<size_t>(info.size * info.itemsize);
                py::gil_scoped_release nogil;
                p.write(dev, offset, ptr, len);
            },
            py::arg("dev"), py::arg("offset"), py::arg("data"))
        .def(
            "discard",
            [](Pool& p, uint32_t dev, uint64_t offset, uint64_t length) {
                py::gil_scoped_release nogil;
                p.discard(dev, offset, length);
            },
            py::arg("dev"), py::arg("offset"), py::arg("length"))
        .def("commit",
             [](Pool& p) {
                 py::gil_scoped_release nogil;
                 p.commit();
             })
        .def("flush",
             [](Pool& p) {
                 py::gil_scoped_release nogil;
                 p.commit();
             })
        .def("close",
             [](Pool& p) {
                 py::gil_scoped_release nogil;
                 p.close();
             })
        .def_property_readonly("closed", [](Pool& p) { return p.closed(); })
        .def_property_readonly("block_size", [](Pool& p) { return p.block_bytes(); })
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](Pool& p, const py::args&) {
            py::gil_scoped_release nogil;
            p.close();
            return false;
        });
    register_thin_fuse(m);
}

}  // namespace sk
