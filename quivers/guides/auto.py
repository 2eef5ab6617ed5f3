"""``AutoGuide``: the shared base of guides built automatically from a program."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from ..program import MonadicProgram, PreparedBatch
from .guide import Batch, Guide, LogProbTerms, Sites, _total
from .initialization import InitFn, init_to_median, load_init_fn, resolve_init_fn
from .registry import LatentRegistry, LatentSite
from .transforms import is_increasing

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
        If the model has no latent sites, a site is discrete or has an unsupported
        support, or ``init_to_value`` names a site that is not a latent site.
    """

    def __init__(
        self,
        model: MonadicProgram,
        observed_names: Sequence[str] | None = None,
        init_loc_fn: InitFn | str = init_to_median,
    ) -> None:
        super().__init__(model)
        self.observed_names = tuple(observed_names or ())
        self.registry = LatentRegistry(model, exclude=observed_names)
        self.init_loc_fn = load_init_fn(init_loc_fn, model, type(self).__name__)

    @property
    def latent_names(self) -> list[str]:
        return self.registry.names

    # ------------------------------------------------------------------ construction helpers
    def _init_unconstrained(self) -> dict[str, torch.Tensor]:
        """Unconstrained initial value of each site (``unconstrained_shape``), from
        ``init_loc_fn`` evaluated in model order (see :meth:`LatentRegistry.initial_values`)."""
        return self.registry.initial_unconstrained(resolve_init_fn(self.init_loc_fn))

    def _prepare(self, batch: Batch) -> PreparedBatch:
        """Validate a batch for the guide. Objectives hand over batches the model already
        prepared (and subsampled); a direct call (``median()``, ``sample_posterior(b)``)
        covers the full plates."""
        return self.model.prepare(batch, subsample=False)

    def _params_for(self, site: LatentSite, param: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """A per-site parameter sliced to the batch's subsample indices."""
        return self.registry.select(site, param, batch)

    # ------------------------------------------------------------------ Guide API
    def rsample(self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = ()) -> Sites:
        return self.rsample_and_log_prob_terms(batch, sample_shape)[0]

    def log_prob(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> torch.Tensor:
        terms = self.log_prob_terms(batch, sites)
        first = sites[self.registry.names[0]]
        ss = first.shape[: first.dim() - len(self.registry[self.registry.names[0]].shape)]
        return _total(terms, ss, dict(sites))

    def log_prob_terms(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> LogProbTerms:
        raise NotImplementedError

    # ------------------------------------------------------------------ closed-form summaries
    def _unconstrained_quantiles(self, z: torch.Tensor, batch: PreparedBatch) -> dict[str, torch.Tensor] | None:
        """Per-site unconstrained marginal quantiles at standard-Normal quantiles ``z``
        (1-D), shape ``(len(z),) + unconstrained shape``; ``None`` when there is no
        closed form. ``z = 0`` gives the median."""
        return None

    @torch.no_grad()
    def latent_median(self, batch: Batch = None, num_samples: int = 1000) -> Sites:
        """Exact (the transformed unconstrained median) for sites with a static,
        elementwise increasing transform where the family has a closed form; the median
        of ``num_samples`` draws otherwise."""
        batch = self._prepare(batch)
        u = self._unconstrained_quantiles(self._normal_quantiles(torch.full((1,), 0.5)), batch)
        return self._exact_or_sampled(u, lambda: Guide.latent_median(self, batch, num_samples), index=0)

    @torch.no_grad()
    def latent_quantiles(self, q: torch.Tensor, batch: Batch = None, num_samples: int = 1000) -> Sites:
        """Exact where :meth:`latent_median` is; estimated from ``num_samples`` draws otherwise."""
        batch = self._prepare(batch)
        u = self._unconstrained_quantiles(self._normal_quantiles(q), batch)
        return self._exact_or_sampled(u, lambda: Guide.latent_quantiles(self, q, batch, num_samples))

    def _normal_quantiles(self, q: torch.Tensor) -> torch.Tensor:
        """``Phi^-1(q)`` in the dtype and on the device of the guide's parameters."""
        ref = next(self.parameters(), None)
        if ref is not None:
            q = q.to(dtype=ref.dtype, device=ref.device)
        return torch.special.ndtri(q)

    def _exact(self, site: LatentSite) -> bool:
        return not site.dynamic and is_increasing(site.transform)

    def _exact_or_sampled(self, u: dict[str, torch.Tensor] | None, sampled: Callable[[], Sites],
                          index: int | None = None) -> Sites:
        out: Sites = {}
        estimate: Sites | None = None
        for site in self.registry:
            if u is not None and self._exact(site):
                x = site.transform(u[site.name]).detach()
                out[site.name] = x[index] if index is not None else x
            else:
                estimate = estimate if estimate is not None else sampled()
                out[site.name] = estimate[site.name]
        return out
