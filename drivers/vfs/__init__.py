"""The vfs driver: every layer is a complete directory tree.

The driver class is in driver.py (its docstring has the layout and the semantics); this
package re-exports it for the ``storagekit.drivers`` entry point.
"""

from .driver import VfsDriver

__all__ = ["VfsDriver"]
