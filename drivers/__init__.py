"""The drivers that ship with storagekit, one package each (installed as storagekit.drivers).

Drivers are found through the ``storagekit.drivers`` entry-point group (see
storagekit.registry), so third-party packages can add their own.
"""
