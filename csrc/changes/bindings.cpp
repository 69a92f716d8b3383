// Python bindings of the changes area.
#include "common/areas.hpp"

namespace sk {

void register_changes(pybind11::module_& m) { (void)m; }

}  // namespace sk
