"""The overlay driver: layers stacked by the kernel's overlayfs.

The driver class is in driver.py (its docstring has the layout and the semantics); this
package re-exports it for the ``storagekit.drivers`` entry point.
"""

from .driver import OverlayDriver

__all__ = ["OverlayDriver"]
