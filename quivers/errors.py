"""Exceptions raised by quivers.

Every error names the site or field at fault, what was expected and what was found, so
that a failing model says *where* and *why* before any parameter or file changes.
All are subclasses of :class:`ValueError`, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "QuiversError",
    "ModelSpecError",
    "BatchError",
    "ShapeError",
    "SupportError",
    "GuideError",
]


class QuiversError(ValueError):
    """Base class of every error quivers raises for bad input."""


class ModelSpecError(QuiversError):
    """A ``MonadicProgram`` declaration is invalid (duplicate names, bad dependencies,
    a step returning something other than a ``Distribution``, an unknown plate)."""


class BatchError(QuiversError):
    """A batch is invalid: a missing or unknown key, a non-finite value, a wrong dtype,
    an empty field, or a subsample index out of range."""


class ShapeError(QuiversError):
    """A value's or distribution's shape disagrees with the site's plates and event shape."""


class SupportError(QuiversError):
    """A value lies outside the support of its site's distribution."""


class GuideError(QuiversError):
    """A guide cannot be built or used for this model (no latent sites, unsupported
    site kind, an ``init_to_value`` value of the wrong shape, ...)."""
