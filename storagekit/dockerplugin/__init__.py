"""storagekit as a Docker graphdriver plugin: dockerd 20.10 (``--experimental -s NAME``) keeps
its images and containers in a storagekit store, on any of storagekit's drivers — aufs and
devicemapper included, which Docker itself no longer has.

    python -m storagekit.dockerplugin --root /var/lib/storagekit --driver aufs serve
    dockerd --experimental -s storagekit-aufs

Modules:
    protocol.py   the wire format (a compatibility contract) and its decoding
    service.py    each graphdriver operation on the Store
    pipes.py      layers between HTTP bodies and the Store, in constant memory
    server.py     the HTTP server (aiohttp) on the unix socket, start and stop
    command.py    `serve`'s arguments, shared with the storagekit command
"""
