"""Global switch for input validation (as Pyro's ``enable_validation``).

Validation (batch keys, finiteness, shapes, supports) is on by default. Turning it off
saves its cost in tight loops once a model is known to be correct.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["enable_validation", "is_validation_enabled", "validation_enabled"]

_VALIDATION = True


def enable_validation(is_enabled: bool = True) -> None:
    """Turn input validation on or off globally.

    Parameters
    ----------
    is_enabled : bool
        ``True`` (the default state) checks every batch and site value;
        ``False`` skips the checks.
    """
    global _VALIDATION
    _VALIDATION = bool(is_enabled)


def is_validation_enabled() -> bool:
    """Whether input validation is currently on."""
    return _VALIDATION


@contextmanager
def validation_enabled(is_enabled: bool = True) -> Iterator[None]:
    """Context manager that sets validation for a block and restores it afterwards."""
    old = _VALIDATION
    enable_validation(is_enabled)
    try:
        yield
    finally:
        enable_validation(old)
