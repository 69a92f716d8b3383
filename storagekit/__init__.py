"""storagekit: a pluggable container storage-driver framework.

Layers, images and containers on one of several drivers (vfs, overlay, aufs, devicemapper),
with the per-file and per-block work in the compiled core storagekit._native.

The Python API, the third way in beside the containerd snapshotter and the Docker plugin::

    import storagekit

    with storagekit.Store("/var/lib/storagekit", driver="overlay") as store:
        images = storagekit.Images(store)
        image = images.import_image("busybox.tar")
        store.create("work", image.top_layer, kind="active")
        root = store.get("work")            # mounted: write into it
        ...
        store.put("work")
        diff = store.diff("work")           # an OCI layer tar of the change
        store.commit("work")                # O(1): the layer becomes a committed parent

The names below are the public API (docs/api.md lists each with what it does and raises).
Compatibility: within a minor version (0.x.*) public names, signatures and the meaning of
their arguments stay; new keyword arguments may be added with defaults that keep the old
behaviour. Anything not listed here (modules' other names, anything with a leading
underscore) may change at any time.

The names are imported on first use, so that ``import storagekit`` stays as cheap as a
container boot needs it to be (see storagekit/bootpath.py).
"""

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    # the store and its records
    "Store": "storagekit.store",
    "Layer": "storagekit.layer",
    "PARENT": "storagekit.layer",
    "KEEP": "storagekit.layer",
    "KINDS": "storagekit.layer",
    "Change": "storagekit.records",
    "ChangeKind": "storagekit.records",
    "Mount": "storagekit.records",
    # images and containers
    "Images": "storagekit.image",
    "Image": "storagekit.image",
    "Containers": "storagekit.runtime",
    "Container": "storagekit.runtime",
    "RunSpec": "storagekit.runtime",
    # drivers
    "Driver": "storagekit.driver",
    "registry": "storagekit",
    # errors
    "StorageError": "storagekit.errors",
    "InvalidArgument": "storagekit.errors",
    "LayerNotFound": "storagekit.errors",
    "LayerExists": "storagekit.errors",
    "LayerInUse": "storagekit.errors",
    "LayerNotMounted": "storagekit.errors",
    "InvalidArchive": "storagekit.errors",
    "DriverNotFound": "storagekit.errors",
    "DriverUnsupported": "storagekit.errors",
    "StoreError": "storagekit.errors",
    "ImageNotFound": "storagekit.errors",
    "InvalidImage": "storagekit.errors",
    "ContainerNotFound": "storagekit.errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> object:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'storagekit' has no attribute {name!r}")
    if name == "registry":  # the submodule itself
        value = __import__("storagekit.registry", fromlist=["GROUP"])
    else:
        value = getattr(__import__(module, fromlist=[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
