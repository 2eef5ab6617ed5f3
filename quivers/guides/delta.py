"""``AutoDeltaGuide``: point mass per site, i.e. MAP estimation (Pyro's ``AutoDelta``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..program import MonadicProgram
from .auto import AutoGuide
from .guide import Batch, LogProbTerms, Sites
from .initialization import InitFn, init_to_median
from .site_params import SiteParameters

__all__ = ["AutoDeltaGuide", "AutoDelta"]


class AutoDeltaGuide(AutoGuide):
    """Point-mass (Delta) guide: maximum a posteriori estimation.

    Each site is a point ``z = biject_to(support)(u)`` with ``u`` the parameter
    ``locs[name]``; ``log q = 0``, so the ELBO is the log joint at the point and SVI
    maximises the posterior density in the constrained space (no Jacobian term), as Pyro's
    ``AutoDelta``. Sites in subsampled plates keep full-size parameters; the batch's
    subsample indices select the slice. The global sites' points are one flat vector
    (:class:`~quivers.guides.site_params.SiteParameters`; ``locs[name]`` is a view and
    ``state_dict()`` holds ``locs.<name>`` per site).

    Parameters
    ----------
    model : MonadicProgram
        The model.
    observed_names : sequence of str, optional
        Sites left out of the guide.
    init_loc_fn : callable
        Init strategy (default :func:`init_to_median`).
    """

    def __init__(
        self,
        model: MonadicProgram,
        observed_names: Sequence[str] | None = None,
        init_loc_fn: InitFn | str = init_to_median,
    ) -> None:
        super().__init__(model, observed_names, init_loc_fn)
        self.locs = SiteParameters(list(self.registry), self._init_unconstrained())

    def rsample_and_log_prob_terms(
        self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = (),
    ) -> tuple[Sites, LogProbTerms]:
        """The points (broadcast over ``sample_shape``); a point mass adds no log-density term."""
        batch = self._prepare(batch)
        ss = torch.Size(sample_shape)
        u = {s.name: self._params_for(s, self.locs[s.name], batch) for s in self.registry}
        values, _ = self.registry.constrain(u, batch, torch.Size())
        return {k: v.expand(ss + v.shape) for k, v in values.items()}, {}

    def log_prob_terms(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> LogProbTerms:
        """No terms: ``log q = 0`` at the point."""
        return {}

    @torch.no_grad()
    def latent_median(self, batch: Batch = None, num_samples: int = 1000) -> Sites:
        """The point estimate per site (exact, also for supports that move with other sites)."""
        return {k: v.detach().clone() for k, v in self.rsample(batch).items()}

    @torch.no_grad()
    def latent_quantiles(self, q: torch.Tensor, batch: Batch = None, num_samples: int = 1000) -> Sites:
        """Every quantile of a point mass is the point."""
        return {k: v.expand((q.numel(),) + v.shape) for k, v in self.latent_median(batch).items()}


AutoDelta = AutoDeltaGuide
