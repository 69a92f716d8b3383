"""The devicemapper driver: every layer a thin snapshot of its parent, as Docker's was.

The driver class is in driver.py (its docstring has the layout and the semantics); this
package re-exports it for the ``storagekit.drivers`` entry point.
"""

from .driver import DeviceMapperDriver

__all__ = ["DeviceMapperDriver"]
