// Python bindings of the archive area.
#include "common/areas.hpp"

namespace sk {

void register_archive(pybind11::module_& m) { (void)m; }

}  // namespace sk
