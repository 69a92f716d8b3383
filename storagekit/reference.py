"""Image references as Docker and containerd write them: the grammar of the distribution
project's reference package (docker/distribution, reference/regexp.go), which the OCI
distribution spec and every registry client follow.

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path-component ( "/" path-component )*
    domain     := host [ ":" port ]        (a first component with "." or ":", or "localhost")
    path-comp  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex        (sha256: 64 lowercase hex digits)

A name is at most 255 characters. Parsing says what is wrong in one line (InvalidImage).
"""

from __future__ import annotations

import re
from collections import namedtuple

from .errors import InvalidImage

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
                     r"(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_ALGORITHM = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*")
_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
NAME_MAX = 255


class Reference(namedtuple("Reference", "domain path tag digest")):
    """A parsed reference (a named tuple, not typing's: `run` resolves image names, and a
    boot imports no typing: storagekit/bootpath.py)."""

    domain: str | None
    path: str
    tag: str | None
    digest: str | None
    __slots__ = ()

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        return (self.name + (f":{self.tag}" if self.tag else "")
                + (f"@{self.digest}" if self.digest else ""))


def _bad(ref: str, why: str) -> InvalidImage:
    return InvalidImage(repr(ref), f"invalid reference format: {why}")


def _check_digest(ref: str, digest: str) -> None:
    algo, sep, hexa = digest.partition(":")
    if not sep or not _ALGORITHM.fullmatch(algo):
        raise _bad(ref, f"digest {digest!r} is not ALGORITHM:HEX")
    want = _HEX_LENGTH.get(algo)
    if want is None:
        raise _bad(ref, f"unsupported digest algorithm {algo!r}")
    if len(hexa) != want or not re.fullmatch(r"[a-f0-9]+", hexa):
        raise _bad(ref, f"a {algo} digest has {want} lowercase hex digits")


def parse(ref: str) -> Reference:
    """Parse a reference; InvalidImage (one line) if it does not follow the grammar."""
    if not isinstance(ref, str) or not ref:
        raise _bad(str(ref), "the reference is empty")
    if not ref.isprintable() or any(c.isspace() for c in ref):
        raise _bad(ref, "no spaces or control characters are allowed")
    rest, _, digest = ref.partition("@")
    if digest:
        _check_digest(ref, digest)
    elif ref.endswith("@"):
        raise _bad(ref, "an empty digest")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise _bad(ref, f"tag {tag!r}: use up to 128 of A-Z a-z 0-9 _ . -, not starting "
                            "with . or -")
    if len(rest) > NAME_MAX:
        raise _bad(ref, f"the name is longer than {NAME_MAX} characters")
    domain = None
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        if not _DOMAIN.fullmatch(first):
            raise _bad(ref, f"registry {first!r} is not HOST[:PORT]")
        domain, rest = first, remainder
    if domain is None and tag is None and re.fullmatch(r"[a-f0-9]{64}", rest):
        raise _bad(ref, "a 64-digit hex string is an image ID, not a name")
    for component in rest.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            why = ("repository name must be lowercase" if component.lower() != component
                   else f"name component {component!r}: use a-z 0-9 separated by . _ __ or -")
            raise _bad(ref, why)
    return Reference(domain, rest, tag, digest or None)
