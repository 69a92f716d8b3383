// Python bindings of the mount area.
#include "common/areas.hpp"

namespace sk {

void register_mount(pybind11::module_& m) { (void)m; }

}  // namespace sk
