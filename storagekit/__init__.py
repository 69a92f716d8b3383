"""storagekit: a pluggable container storage-driver framework.

Layers, images and containers on one of several drivers (vfs, overlay, aufs, devicemapper),
with the per-file and per-block work in the compiled core storagekit._native.
"""

__version__ = "0.1.0"
