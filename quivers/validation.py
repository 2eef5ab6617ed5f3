"""Global switch for input validation (as Pyro's ``enable_validation``).

Validation (batch keys, finiteness, shapes, supports) is on by default. Turning it off
saves its cost in tight loops once a model is known to be correct.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch.distributions import Distribution

__all__ = ["enable_validation", "is_validation_enabled", "validation_enabled", "ValidationCache"]

_VALIDATION = True


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
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._passed: dict[tuple, object] = {}
        self._max = max_entries

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
