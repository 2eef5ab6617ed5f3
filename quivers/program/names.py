"""Names of sites, params and plates, and the plate sizes declared with them."""

from __future__ import annotations

import unicodedata
from typing import Any

from ..errors import ModelSpecError
from ..validation import check_positive_int

__all__ = ["check_identifier", "check_size"]


def check_identifier(name: Any, what: str) -> str:
    """Check a site, param or plate name.

    Step functions name their dependencies by their parameter names, and Python reads
    identifiers in NFKC normal form (``def f(ﬁ)`` has a parameter ``fi``), so a name must
    be an identifier equal to its own NFKC form, or no step could ever depend on it.

    Raises
    ------
    ModelSpecError
        If ``name`` is not a string, not an identifier, or not in NFKC form.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ModelSpecError(f"{what} name {name!r}: expected a Python identifier")
    normal = unicodedata.normalize("NFKC", name)
    if normal != name:
        raise ModelSpecError(
            f"{what} name {name!r}: Python reads this identifier as {normal!r} (NFKC normalisation), so a step "
            f"function could not name it as a parameter; use {normal!r}"
        )
    return name


def check_size(value: Any, what: str) -> int:
    """A plate size (or subsample size) as an ``int``, checked (integral finite numbers
    such as ``5.0`` are accepted).

    Raises
    ------
    ModelSpecError
        If ``value`` is a bool, not a number, NaN, infinite, not integral, or below 1.
    """
    return check_positive_int(value, what, ModelSpecError)
