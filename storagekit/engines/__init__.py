"""storagekit's own engines, for what this kernel lacks: each serves a driver's backend from a
daemon of its own (the start/ready/stop model both share is in daemon.py).

- union/: the union filesystem engine — aufs branch semantics on aufs's on-disk format
  (``.wh.`` whiteouts, ``.wh..wh..opq``, pseudo-links), a FUSE daemon in C++
  (csrc/union/, the program storagekit-uniond); the aufs driver's backend where the kernel
  has no aufs.
- thin/: the thin-provisioning engine — dm-thin's semantics and on-disk metadata format
  (csrc/thin/), its thin devices served as files over FUSE to loop devices by a per-pool
  daemon; the devicemapper driver's backend where the kernel has no device-mapper.

Drivers and the CLI use engines; the core (store, contract, registry) does not.
"""
