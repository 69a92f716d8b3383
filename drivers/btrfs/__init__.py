"""The btrfs driver: every layer a subvolume, a child a snapshot of its parent.

The driver class is in driver.py (its docstring has the layout and the semantics); this
package re-exports it for the ``storagekit.drivers`` entry point.
"""

from .driver import BtrfsDriver

__all__ = ["BtrfsDriver"]
