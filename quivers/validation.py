"""Global switch for input validation (as Pyro's ``enable_validation``).

Validation (batch keys, finiteness, shapes, supports) is on by default. Turning it off
saves its cost in tight loops once a model is known to be correct.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import zuko.distributions  # noqa: F401 - imported here, once, for its side effect (below)
from torch.distributions import Distribution

__all__ = ["enable_validation", "is_validation_enabled", "validation_enabled", "ValidationCache", "check_positive_int"]

_VALIDATION = True
# importing zuko turns torch's argument validation off for every distribution
# (``Distribution._validate_args = False`` in zuko/distributions.py): import it now, before
# anything else can, and put torch's default back to quivers' setting
Distribution.set_default_validate_args(_VALIDATION)


def enable_validation(is_enabled: bool = True) -> None:
    """Turn input validation on or off globally (as Pyro's ``enable_validation``).

    Also sets ``torch.distributions.Distribution``'s default argument validation, as
    Pyro does, since most of the cost of checking lies there.

    Parameters
    ----------
    is_enabled : bool
        ``True`` (the default state) checks every batch and site value;
        ``False`` skips the checks.
    """
    global _VALIDATION
    _VALIDATION = bool(is_enabled)
    Distribution.set_default_validate_args(_VALIDATION)


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


class ValidationCache:
    """Remembers checks that passed for tensors that have not changed since.

    A key is a tensor's identity and version counter (bumped by every in-place write)
    plus a description of the check, so a batch fed again unchanged (full-batch
    training) is validated once, while a modified or new tensor is checked again.
    Entries hold a weak reference to the tensor: they never keep data alive, and a
    new tensor reusing a freed id does not inherit the old one's result. Inference
    tensors (made under ``torch.inference_mode``) have no version counter and are
    checked every time.

    It also holds the last batch plan of :func:`quivers.program.batch.prepare_batch`
    (``batch_plan``). Nothing of it is pickled or copied: a program pickled or
    deep-copied after use starts with an empty cache (weak references cannot be
    pickled), and checks again.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._passed: dict[tuple, object] = {}
        self._max = max_entries
        self.batch_plan: tuple | None = None

    def __getstate__(self) -> dict:
        return {"_passed": {}, "_max": self._max, "batch_plan": None}

    def __deepcopy__(self, memo: dict) -> ValidationCache:
        return ValidationCache(self._max)

    def seen(self, tensor, what: str) -> bool:
        """Whether ``what`` already passed for this exact, unchanged tensor."""
        if tensor.is_inference():  # inference tensors have no version counter: always check
            return False
        ref = self._passed.get((id(tensor), tensor._version, what))
        return ref is not None and ref() is tensor

    def add(self, tensor, what: str) -> None:
        """Record that ``what`` passed for ``tensor``."""
        import weakref

        if tensor.is_inference():
            return
        if len(self._passed) >= self._max:
            self._passed.clear()
        self._passed[(id(tensor), tensor._version, what)] = weakref.ref(tensor)


def check_positive_int(value: Any, what: str, error: type[Exception]) -> int:
    """``value`` as an ``int`` >= 1: an integer, or an integral finite number (``5.0``, a
    0-d tensor's item).

    Parameters
    ----------
    value : int
        The count (a plate size, ``num_particles``, ``num_samples``, a batch size, ...).
    what : str
        Its name, for the message.
    error : type
        The :class:`~quivers.errors.QuiversError` subclass raised.

    Raises
    ------
    QuiversError
        ``error``, if ``value`` is a bool, not a number, NaN, infinite, fractional or < 1.
    """
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or int(value) != value or value < 1:
        raise error(f"{what} must be a positive int, got {value!r}")
    return int(value)
