// Python bindings of the copyup area.
#include "common/areas.hpp"

namespace sk {

void register_copyup(pybind11::module_& m) { (void)m; }

}  // namespace sk
