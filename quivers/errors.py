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
    "CheckpointError",
    "ConfigError",
    "NonFiniteLossError",
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


class CheckpointError(QuiversError):
    """A checkpoint cannot be loaded: the file is missing, truncated or corrupted, was not
    written by ``SVIModule``, comes from an incompatible quivers version, or holds the
    parameters of another model or guide (names or shapes differ)."""


class ConfigError(QuiversError):
    """A training or data setting is invalid: a learning rate that is not a positive finite
    number, an argument the optimizer or objective does not take, a data module that is
    empty, has 0-d fields, a fractional batch size, or a plate or row count that does not
    match the model."""


class NonFiniteLossError(RuntimeError):
    """A training step produced a non-finite loss or gradient; the step was not applied.

    Attributes
    ----------
    sites : list of str
        The sites whose log-density was non-finite when the step was re-run for
        diagnosis (``"<guide>"`` for the guide's own log-density); empty when the
        non-finite value could not be reproduced (for instance it only appeared in the
        gradient).
    """

    def __init__(self, message: str, sites: list[str] | None = None) -> None:
        super().__init__(message)
        self.sites = list(sites or [])
