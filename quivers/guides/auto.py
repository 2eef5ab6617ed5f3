"""``AutoGuide``: the shared base of guides built automatically from a program."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..program import MonadicProgram, PreparedBatch
from ..spec import import_path
from .guide import Batch, Guide
from .initialization import InitFn, init_to_median
from .registry import LatentRegistry, LatentSite

__all__ = ["AutoGuide"]


class AutoGuide(Guide):
    """Base of automatic guides: holds the model's :class:`LatentRegistry`.

    Subclasses build their parameters in ``__init__`` from ``self.registry`` (each
    site's shape, support and transform) and initial values from ``init_loc_fn``.
    The model is referenced, not registered as a submodule: the guide's
    ``parameters()`` and ``state_dict()`` hold the guide's own parameters only.

    Parameters
    ----------
    model : MonadicProgram
        The model to approximate.
    observed_names : sequence of str, optional
        Sites left out of the guide: latent sites the batch will supply as data, or
        sites another guide covers.
    init_loc_fn : callable or str
        Init strategy (see :mod:`quivers.guides.initialization`), or its import path
        (as configs give it, e.g. ``"quivers.guides.init_to_mean"``).

    Raises
    ------
    GuideError
        If the model has no latent sites, or a site is discrete or has an unsupported
        support.
    """

    def __init__(
        self,
        model: MonadicProgram,
        observed_names: Sequence[str] | None = None,
        init_loc_fn: InitFn | str = init_to_median,
    ) -> None:
        super().__init__()
        if isinstance(init_loc_fn, str):
            init_loc_fn = import_path(init_loc_fn)
        object.__setattr__(self, "model", model)  # a reference, not a submodule
        self.observed_names = tuple(observed_names or ())
        self.registry = LatentRegistry(model, exclude=observed_names)
        self.init_loc_fn = init_loc_fn

    @property
    def latent_names(self) -> list[str]:
        return self.registry.names

    def _init_value(self, site: LatentSite) -> torch.Tensor:
        """Constrained initial value of ``site`` from ``init_loc_fn``, checked."""
        value = self.init_loc_fn(site)
        return LatentRegistry.check_value(site, value, "initial value")

    def _prepare(self, batch: Batch) -> PreparedBatch:
        """Validate a batch for the guide. Objectives hand over batches the model already
        prepared (and subsampled); a direct call (``median()``, ``sample_posterior(b)``)
        covers the full plates."""
        return self.model.prepare(batch, subsample=False)

    def _params_for(self, site: LatentSite, param: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """A per-site parameter sliced to the batch's subsample indices."""
        return self.registry.select(site, param, batch)
