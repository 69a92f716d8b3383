"""The Python API reference (docs/api.md), generated from the public names' docstrings.

    python3 -m storagekit.apidoc > docs/api.md

tests/test_python_api.py regenerates it and fails when the committed file differs, so the reference
never drifts from the code; it also fails when a public method has no docstring.
"""

from __future__ import annotations

import enum
import inspect
import sys
import types

import storagekit

HEADER = """\
# storagekit Python API

Generated from the docstrings by `python3 -m storagekit.apidoc > docs/api.md` (the tests check
that this file is current). Everything here is importable from `storagekit` itself.

**Compatibility.** Within a minor version (0.x.*) these names, their signatures and the meaning
of their arguments stay; new keyword arguments may be added, with defaults that keep the old
behaviour. Names not listed here, and anything with a leading underscore, may change at any
time. The on-disk store is compatible across versions: a newer storagekit migrates an older
store at open; an older one refuses a newer store with a one-line error.
"""


def _doc(obj: object) -> str:
    return inspect.cleandoc(obj.__doc__ or "")


def _signature(obj: object) -> str:
    """The call signature as written in the source: no `self`, annotations unquoted."""
    try:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "(...)"
    params = [p for p in sig.parameters.values() if p.name not in ("self", "cls")]
    parts, star_done = [], False
    for p in params:
        if p.kind is p.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        if p.kind is p.VAR_POSITIONAL:
            star_done = True
        text = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name
        if p.annotation is not p.empty:
            text += f": {_annotation(p.annotation)}"
        if p.default is not p.empty:
            text += f" = {p.default!r}" if p.annotation is not p.empty else f"={p.default!r}"
        parts.append(text)
    out = f"({', '.join(parts)})"
    if sig.return_annotation is not sig.empty and sig.return_annotation != "None":
        out += f" -> {_annotation(sig.return_annotation)}"
    return out


def _annotation(annotation: object) -> str:
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _indented(doc: str) -> list[str]:
    return ["  " + line if line else "" for line in doc.splitlines()]


def public_members(cls: type) -> list[tuple[str, object]]:
    """The methods and properties of cls a user calls: its own and its storagekit bases',
    without the underscore ones (but with __init__), in definition order."""
    seen: dict[str, object] = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("storagekit"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") and name != "__init__":
                continue
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if inspect.isfunction(value) or isinstance(value, property):
                seen[name] = value
    return list(seen.items())


def undocumented() -> list[str]:
    """Public classes and methods without a docstring (the test wants none)."""
    missing = []
    for name in storagekit.__all__:
        obj = getattr(storagekit, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            if not _own_doc(obj):
                missing.append(name)
        elif inspect.isclass(obj) and not issubclass(obj, enum.Enum):
            if not _own_doc(obj):
                missing.append(name)
            for member, value in public_members(obj):
                target = value.fget if isinstance(value, property) else value
                if not (target.__doc__ or "").strip():  # type: ignore[union-attr]
                    missing.append(f"{name}.{member}")
    return missing


def _own_doc(cls: type) -> str:
    doc = cls.__dict__.get("__doc__") or ""
    # named tuples get a generated "Name(a, b)" docstring: that is not documentation
    return "" if doc.startswith(f"{cls.__name__}(") else doc


def _class_section(name: str, cls: type) -> list[str]:
    out = [f"## `{name}`", ""]
    if issubclass(cls, enum.Enum):
        out += [_doc(cls), "", ", ".join(f"`{m.name}` ({m!r})" for m in cls), ""]
        return out
    if issubclass(cls, BaseException):
        bases = ", ".join(b.__name__ for b in cls.__bases__)
        return out + [f"*exception* ({bases})", "", _doc(cls), ""]
    fields = getattr(cls, "_fields", None)
    if fields:
        out += [f"`{name}({', '.join(fields)})`, a named tuple", ""]
    out += [inspect.cleandoc(_own_doc(cls)), ""]
    for member, value in public_members(cls):
        if isinstance(value, property):
            out += [f"- **`{member}`** (property)", ""] + _indented(_doc(value.fget)) + [""]
        else:
            shown = name if member == "__init__" else f".{member}"
            out += [f"- **`{shown}{_signature(value)}`**", ""]
            out += _indented(_doc(value)) + [""]
    return out


def render() -> str:
    """docs/api.md's text."""
    out = [HEADER]
    values, modules, classes = [], [], []
    for name in storagekit.__all__:
        obj = getattr(storagekit, name)
        if inspect.isclass(obj):
            classes.append((name, obj))
        elif isinstance(obj, types.ModuleType):
            modules.append((name, obj))
        else:
            values.append((name, obj))
    out += ["## Values", ""]
    out += [f"- `{name}` = `{value!r}`" for name, value in values] + [""]
    for name, cls in classes:
        out += _class_section(name, cls)
    for name, module in modules:
        out += [f"## `storagekit.{name}`", "", _doc(module), ""]
        for fname, func in inspect.getmembers(module, inspect.isfunction):
            if fname.startswith("_") or func.__module__ != module.__name__:
                continue
            out += [f"- **`{name}.{fname}{_signature(func)}`**", ""]
            out += _indented(_doc(func)) + [""]
    text = "\n".join(out)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
