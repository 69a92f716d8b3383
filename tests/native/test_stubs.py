"""storagekit/_native.pyi against the native modules it describes (storagekit._native and the
two it loads, storagekit._archive and storagekit._fuse), both ways, so that the stub cannot
drift: every public name of a module is declared and every declared name exists; every class
has the members its declaration lists and no others; every function and method takes the
parameters the stub gives it, by name, kind and whether they have a default."""

from __future__ import annotations

import ast
import builtins
import importlib
from pathlib import Path

import pytest

import storagekit

STUB = Path(storagekit.__file__).with_name("_native.pyi")
MODULES = ("storagekit._native", "storagekit._archive", "storagekit._fuse")


def stub_tree() -> ast.Module:
    return ast.parse(STUB.read_text(encoding="utf-8"))


def is_shape(node: ast.ClassDef) -> bool:
    """A TypedDict: the shape of a dict a function returns, not a name of the module."""
    return any(isinstance(b, ast.Name) and b.id == "TypedDict" for b in node.bases)


def declared(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """The names a stub body declares (imports and private aliases aside)."""
    out: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef):
            out[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
        elif isinstance(node, ast.Assign):
            out.update({t.id: node for t in node.targets if isinstance(t, ast.Name)})
    return {k: v for k, v in out.items() if not k.startswith("_") or k.startswith("__")}


def module_names() -> dict[str, str]:
    """Public name -> the module that defines it. (_native keeps what it found in the other
    two once used: those are theirs.)"""
    out: dict[str, str] = {}
    for name in reversed(MODULES):
        mod = importlib.import_module(name)
        for attr in dir(mod):
            if attr.startswith("_"):
                continue
            if attr in out:
                owner = importlib.import_module(out[attr])
                assert getattr(mod, attr) is getattr(owner, attr), (
                    f"{attr} is defined by both {out[attr]} and {name}")
                continue
            out[attr] = name
    return out


def stub_names() -> dict[str, ast.AST]:
    return {k: v for k, v in declared(stub_tree().body).items()
            if not (isinstance(v, ast.ClassDef) and is_shape(v))}


def test_every_name_of_the_modules_is_declared():
    missing = sorted(set(module_names()) - set(stub_names()))
    assert not missing, f"defined by the native modules, not in {STUB.name}: {missing}"


def test_every_declared_name_exists_and_is_reached_through_native():
    native = importlib.import_module("storagekit._native")
    extra = sorted(set(stub_names()) - set(module_names()))
    assert not extra, f"declared in {STUB.name}, defined by no native module: {extra}"
    for name in stub_names():
        assert getattr(native, name) is not None, name


# --------------------------------------------------------------------------- signatures


def split_top(text: str) -> list[str]:
    """Splits at the commas outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def native_params(func: object) -> list[tuple[str, str, bool]]:
    """(name, kind, has default) of each parameter pybind11 reports in the first line of the
    docstring ("name(a: T, *, b: U = 1) -> R"), self left out; kind is "positional",
    "keyword" (after a bare *) or "varargs"."""
    first = (func.__doc__ or "").split("\n", 1)[0]
    inner = first[first.index("(") + 1 : first.rindex(") ->")]
    out, kind = [], "positional"
    for p in split_top(inner):
        if p == "*":
            kind = "keyword"
            continue
        name = p.split(":", 1)[0].split("=", 1)[0].strip()
        if name.startswith("*"):
            out.append(("*", "varargs", False))
            continue
        if name != "self":
            out.append((name, kind, "=" in p))
    return out


def stub_params(fn: ast.FunctionDef) -> list[tuple[str, str, bool]]:
    a = fn.args
    positional = a.posonlyargs + a.args
    first_default = len(positional) - len(a.defaults)
    out = [(p.arg, "positional", i >= first_default)
           for i, p in enumerate(positional) if p.arg != "self"]
    if a.vararg:
        out.append(("*", "varargs", False))
    defaults = zip(a.kwonlyargs, a.kw_defaults, strict=True)
    out += [(p.arg, "keyword", d is not None) for p, d in defaults]
    return out


def is_property(fn: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list)


def functions():
    native = importlib.import_module("storagekit._native")
    for name, node in stub_names().items():
        if isinstance(node, ast.FunctionDef):
            yield name, getattr(native, name), node


def methods():
    native = importlib.import_module("storagekit._native")
    for cname, node in stub_names().items():
        cls = getattr(native, cname)
        if not isinstance(node, ast.ClassDef) or issubclass(cls, BaseException):
            continue
        for mname, m in declared(node.body).items():
            if isinstance(m, ast.FunctionDef) and not is_property(m):
                yield f"{cname}.{mname}", getattr(cls, mname), m


@pytest.mark.parametrize("func,node", [pytest.param(f, n, id=name) for name, f, n in functions()])
def test_functions_take_the_declared_parameters(func, node):
    assert native_params(func) == stub_params(node)


@pytest.mark.parametrize("func,node", [pytest.param(f, n, id=name) for name, f, n in methods()])
def test_methods_take_the_declared_parameters(func, node):
    assert native_params(func) == stub_params(node)


# --------------------------------------------------------------------------- classes


def test_classes_have_the_declared_members_and_bases():
    native = importlib.import_module("storagekit._native")
    for cname, node in stub_names().items():
        if not isinstance(node, ast.ClassDef):
            continue
        cls = getattr(native, cname)
        assert isinstance(cls, type), cname
        for base in node.bases:
            assert isinstance(base, ast.Name), cname
            assert issubclass(cls, getattr(builtins, base.id, None) or getattr(native, base.id))
        if issubclass(cls, BaseException):
            continue  # their attributes (EngineError.kind) are set on each instance
        members = declared(node.body)
        public = {m for m in dir(cls) if not m.startswith("_")}
        assert public == {m for m in members if not m.startswith("_")}, cname
        for dunder in (m for m in members if m.startswith("__")):
            assert hasattr(cls, dunder), f"{cname}.{dunder}"
        for mname, m in members.items():
            if isinstance(m, ast.FunctionDef) and is_property(m):
                assert isinstance(getattr(cls, mname), property), f"{cname}.{mname}"
