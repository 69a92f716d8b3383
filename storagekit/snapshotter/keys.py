"""containerd's snapshot keys as store layer names, and the limits they are held to.

A snapshot's key (an active or view snapshot's) or name (a committed one's) is an arbitrary
string: containerd uses ``default/12/sha256:…`` and ``extract-123 sha256:…``. It never
becomes a path: the layer gets an id of its own (``ctd-`` and 32 hex digits, the driver's
directory name) and the key is kept as the layer's *name*, ``containerd:<namespace>/<key>``.
Store names are unique, so one key names one layer in its namespace, and a commit that gives
the layer a new name is one UPDATE (O(1), the layer's content stays where it is).

This encoding is a compatibility contract of the store's data: changing it needs a migration
of the names already recorded.

Namespaces follow containerd's identifiers (``[A-Za-z0-9]+`` joined by ``.``, ``_``, ``-``,
at most 76 characters); a request without one (containerd's garbage collector walks and
removes without a namespace) uses the unnamed namespace for what it makes, and finds a key in
any namespace when it is unique there.
"""

from __future__ import annotations

import re
import secrets

from storagekit.errors import InvalidArgument

#: what every name this service gives a layer starts with
PREFIX = "containerd:"
#: the longest key accepted, in bytes of UTF-8 (a store name is at most 4096 characters)
MAX_KEY = 4000
_NAMESPACE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")
_MAX_NAMESPACE = 76


def check_namespace(namespace: str) -> str:
    """The namespace if containerd would accept it as one ("" for none), else InvalidArgument."""
    if namespace and (len(namespace) > _MAX_NAMESPACE or not _NAMESPACE.fullmatch(namespace)):
        raise InvalidArgument(f"invalid containerd namespace {namespace[:80]!r}")
    return namespace


def check_key(key: str, what: str = "key") -> str:
    """The key if it can name a snapshot (non-empty, no NUL, at most MAX_KEY bytes)."""
    if not key:
        raise InvalidArgument(f"a snapshot {what} must not be empty")
    if "\0" in key:
        raise InvalidArgument(f"a snapshot {what} must not contain NUL")
    if len(key.encode()) > MAX_KEY:
        raise InvalidArgument(f"a snapshot {what} must be at most {MAX_KEY} bytes, "
                              f"not {len(key.encode())}")
    return key


def layer_name(namespace: str, key: str) -> str:
    """The store name of the snapshot `key` of `namespace`."""
    return f"{PREFIX}{namespace}/{key}"


def split_name(name: str | None) -> tuple[str, str] | None:
    """(namespace, key) of a layer name this service gave; None for any other layer's."""
    if not name or not name.startswith(PREFIX):
        return None
    namespace, sep, key = name[len(PREFIX):].partition("/")
    return (namespace, key) if sep else None


def new_layer_id() -> str:
    """A fresh layer id for a snapshot (random: keys are not paths, and a commit renames)."""
    return "ctd-" + secrets.token_hex(16)
