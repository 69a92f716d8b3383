// Python bindings of the whiteout area.
#include "common/areas.hpp"

namespace sk {

void register_whiteout(pybind11::module_& m) { (void)m; }

}  // namespace sk
