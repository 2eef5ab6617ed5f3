"""``AutoDeltaGuide``: point mass per site, i.e. MAP estimation (Pyro's ``AutoDelta``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..program import MonadicProgram
from .auto import AutoGuide
from .guide import Batch, Sites, _check_quantiles
from .initialization import InitFn, init_to_median

__all__ = ["AutoDeltaGuide", "AutoDelta"]


class AutoDeltaGuide(AutoGuide):
    """Point-mass (Delta) guide: maximum a posteriori estimation.

    Each site is a point ``z = biject_to(support)(u)`` with ``u`` the parameter
    ``locs[name]``; ``log q = 0``, so the ELBO is the log joint at the point and SVI
    maximises the posterior density in the constrained space (no Jacobian term), as Pyro's
    ``AutoDelta``. Sites in subsampled plates keep full-size parameters; the batch's
    subsample indices select the slice.

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
        self.locs = nn.ParameterDict()
        for site in self.registry:
            u = self.registry.unconstrain(site, self._init_value(site)).reshape(site.unconstrained_shape)
            self.locs[site.name] = nn.Parameter(u.detach().clone())

    def rsample(self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = ()) -> Sites:
        return self.rsample_and_log_prob(batch, sample_shape)[0]

    def rsample_and_log_prob(
        self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = (),
    ) -> tuple[Sites, torch.Tensor]:
        batch = self._prepare(batch)
        ss = torch.Size(sample_shape)
        values = {}
        for s in self.registry:
            x = s.transform(self._params_for(s, self.locs[s.name], batch))
            values[s.name] = x.expand(ss + x.shape)
        return values, torch.zeros(ss)

    def log_prob(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> torch.Tensor:
        first = sites[self.registry.names[0]]
        site = self.registry[self.registry.names[0]]
        return torch.zeros(first.shape[: first.dim() - len(site.shape)], dtype=first.dtype)

    @torch.no_grad()
    def median(self, batch: Batch = None) -> Sites:
        """The point estimate per site, shape ``batch_shape + event_shape``."""
        return {k: v.detach().clone() for k, v in self.rsample(batch).items()}

    @torch.no_grad()
    def quantiles(self, quantiles: Sequence[float] | torch.Tensor, batch: Batch = None) -> Sites:
        """Every quantile of a point mass is the point: shape ``(len(quantiles),) + shape``."""
        q = _check_quantiles(quantiles)
        return {k: v.expand((q.numel(),) + v.shape) for k, v in self.median(batch).items()}


AutoDelta = AutoDeltaGuide
