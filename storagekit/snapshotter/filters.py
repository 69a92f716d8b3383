"""containerd's filter syntax (its filters package), for List:

    selectors := selector ("," selector)*        every selector must match (AND)
    selector  := fieldpath [operator value]      no operator: the field is present
    fieldpath := field ("." field)*
    field     := quoted | [A-Za-z][A-Za-z0-9_]*
    operator  := "==" | "!=" | "~="             "~=": a regular expression search
    value     := quoted | [^\\s,]+
    quoted    := a string between two '"', '/' or '|', with Go's escapes

Several filter strings are OR'ed (containerd's ParseAll); none, or an empty one, matches
everything. A snapshot's fields are those containerd's metadata store adapts: ``kind``
(active, view, committed), ``name``, ``parent`` and ``labels.<key>`` (the rest of the path
joined by dots). As in containerd, ``!=`` also matches a field that is absent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from storagekit.errors import InvalidArgument

#: a snapshot as the filters see it: fieldpath -> (value, present)
Fields = Callable[[Sequence[str]], tuple[str, bool]]
Filter = Callable[[Fields], bool]

_QUOTES = '"/|'
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                   "v": "\v", "\\": "\\"}
_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_VALUE = re.compile(r"[^\s,]+")
_OPERATORS = ("==", "!=", "~=")
_MAX_FILTER = 64 * 1024  # bytes: a bound on the work one List asks for


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def fail(self, what: str) -> InvalidArgument:
        return InvalidArgument(f"invalid filter {self.text[:200]!r} at {self.pos}: {what}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def quoted(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        out = []
        while True:
            ch = self.peek()
            if not ch or ch == "\n":
                raise self.fail("quoted literal not terminated")
            self.pos += 1
            if ch == quote:
                return "".join(out)
            if ch == "\\":
                out.append(self.escape(quote))
            else:
                out.append(ch)

    def escape(self, quote: str) -> str:
        ch = self.peek()
        self.pos += 1
        if ch in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[ch]
        if ch == quote:
            return quote
        digits = {"x": (2, 16), "u": (4, 16), "U": (8, 16)}.get(ch)
        if ch in "01234567" and ch:
            self.pos -= 1
            digits = (3, 8)
        if digits is None:
            raise self.fail("invalid escape in a quoted literal")
        count, base = digits
        code = self.text[self.pos:self.pos + count]
        try:
            if len(code) != count:
                raise ValueError(code)
            value = int(code, base)
            self.pos += count
            return chr(value)
        except ValueError:
            raise self.fail("invalid escape in a quoted literal") from None

    def field(self) -> str:
        self.skip_space()
        if self.peek() and self.peek() in _QUOTES:
            return self.quoted()
        m = _FIELD.match(self.text, self.pos)
        if not m:
            raise self.fail("expected a field name")
        self.pos = m.end()
        return m.group()

    def selector(self) -> Filter:
        path = [self.field()]
        while True:
            self.skip_space()
            if self.peek() != ".":
                break
            self.pos += 1
            path.append(self.field())
        self.skip_space()
        op = self.text[self.pos:self.pos + 2]
        if op not in _OPERATORS:
            if self.peek() not in ("", ","):
                raise self.fail("expected an operator (==, !=, ~=), ',' or the end")
            return lambda fields: fields(path)[1]
        self.pos += 2
        self.skip_space()
        if self.peek() and self.peek() in _QUOTES:
            value = self.quoted()
        else:
            m = _VALUE.match(self.text, self.pos)
            if not m:
                raise self.fail("expected a value")
            self.pos = m.end()
            value = m.group()
        if op == "==":
            return lambda fields: (lambda v, p: p and v == value)(*fields(path))
        if op == "!=":
            return lambda fields: fields(path)[0] != value
        try:
            pattern = re.compile(value)
        except re.error as e:
            raise self.fail(f"invalid regular expression {value!r}: {e}") from None
        return lambda fields: pattern.search(fields(path)[0]) is not None

    def parse(self) -> Filter:
        selectors = [self.selector()]
        while True:
            self.skip_space()
            if not self.peek():
                break
            if self.peek() != ",":
                raise self.fail("expected ',' or the end")
            self.pos += 1
            selectors.append(self.selector())
        return lambda fields: all(s(fields) for s in selectors)


def parse(filters: Sequence[str]) -> Filter:
    """One filter for containerd's list of filter strings (OR'ed); InvalidArgument if one
    does not parse."""
    if sum(len(f) for f in filters) > _MAX_FILTER:
        raise InvalidArgument(f"filters longer than {_MAX_FILTER} bytes in all")
    parsed = [_Parser(f).parse() for f in filters if f.strip()]
    if len(parsed) < len(filters) or not parsed:  # an empty filter string matches everything
        return lambda fields: True
    return lambda fields: any(f(fields) for f in parsed)


def snapshot_fields(kind: str, name: str, parent: str, labels: Mapping[str, str]) -> Fields:
    """The fields of one snapshot, as containerd's metadata store adapts them for filters."""

    def fields(path: Sequence[str]) -> tuple[str, bool]:
        head = path[0]
        if head == "kind":
            return kind, True
        if head == "name":
            return name, True
        if head == "parent":
            return parent, True
        if head == "labels" and len(path) > 1:
            key = ".".join(path[1:])
            return (labels[key], True) if key in labels else ("", False)
        return "", False

    return fields
