"""storagekit as a containerd snapshotter: every driver of the store behind containerd's
proxy-plugin gRPC service, containerd.services.snapshots.v1.Snapshots, on a unix socket.

    storagekit --root /var/lib/storagekit --driver overlay snapshotter serve \
        --socket /run/storagekit/snapshotter-overlay.sock
    storagekit --driver overlay snapshotter config >> /etc/containerd/config.toml
    ctr run --snapshotter storagekit-overlay ...

Modules:
    api/          the .proto files (the wire format: a compatibility contract) and their
                  generated stubs (scripts/gen-snapshotter-stubs.sh)
    keys.py       containerd's namespaces and keys as store layer names
    filters.py    containerd's filter syntax, for List
    service.py    each snapshotter operation on the Store
    server.py     the gRPC server on the unix socket, start and stop
    command.py    `serve` and `config`, for the storagekit command
"""
