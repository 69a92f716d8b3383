"""The types of an image config, checked when the image comes in: the OCI image spec's
config (config.md) as Docker and containerd decode it into typed structs, so that a config a
container cannot be run from is refused at import in one line, not at `run` in a traceback.

Only what storagekit reads is checked, and how the spec types it:
- the top level and "config" are objects ("config" may be null);
- Entrypoint and Cmd: null or a list of strings; Env: null or a list of KEY=VALUE strings;
- User, WorkingDir, Hostname, Domainname, StopSignal: strings; WorkingDir absolute or empty;
  a numeric User id below 2^32 - 1 (the kernel's invalid id);
- no string holds a NUL (nothing could pass it to exec or open);
- rootfs: an object whose diff_ids are digest strings (checked by the caller).
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidImage

_STRINGS = ("User", "WorkingDir", "Hostname", "Domainname", "StopSignal")
_LISTS = ("Entrypoint", "Cmd", "Env")
_MAX_ID = (1 << 32) - 2  # (uid_t)-1 is "no id" to the kernel


def _strings(label: str, key: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidImage(label, f"the config's {key} is not a list of strings")
    for v in value:
        if "\0" in v:
            raise InvalidImage(label, f"the config's {key} holds a NUL character")


def check_config(label: str, config: Any) -> dict[str, Any]:
    """Return config if its types are the spec's, else raise InvalidImage."""
    if not isinstance(config, dict):
        raise InvalidImage(label, "the image config is not a JSON object")
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict):
        raise InvalidImage(label, "the config's rootfs is not an object")
    runtime = config.get("config")
    if runtime is None:
        return config
    if not isinstance(runtime, dict):
        raise InvalidImage(label, "the config's config (Env, Cmd, ...) is not an object")
    for key in _LISTS:
        _strings(label, key, runtime.get(key))
    for v in runtime.get("Env") or []:
        if "=" not in v or v.startswith("="):
            raise InvalidImage(label, f"the config's Env entry {v[:40]!r} is not KEY=VALUE")
    for key in _STRINGS:
        value = runtime.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidImage(label, f"the config's {key} is not a string")
        if "\0" in value:
            raise InvalidImage(label, f"the config's {key} holds a NUL character")
    workdir = runtime.get("WorkingDir")
    if workdir and not workdir.startswith("/"):
        raise InvalidImage(label, f"the config's WorkingDir {workdir[:40]!r} is not absolute")
    for part in (runtime.get("User") or "").split(":", 1):
        if part.isdigit() and int(part) > _MAX_ID:
            raise InvalidImage(label, f"the config's User id {part[:20]} is not a valid id "
                                      f"(at most {_MAX_ID})")
    return config
