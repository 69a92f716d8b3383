"""The aufs driver: layers as aufs branches.

The driver class is in driver.py (its docstring has the layout and the semantics); this
package re-exports it for the ``storagekit.drivers`` entry point.
"""

from .driver import AufsDriver

__all__ = ["AufsDriver"]
