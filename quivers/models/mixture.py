"""A Gaussian mixture with the component of each point summed out (enumerated)."""

from __future__ import annotations

import torch
from torch import distributions as dist

from ..program import Latent, MonadicProgram, Observed, Plate, vindex

__all__ = ["GaussianMixture"]


class GaussianMixture(MonadicProgram):
    """``K`` full-covariance Gaussian components over ``D`` features.

    ``weights ~ Dirichlet(1)``, ``locs[k] ~ N(0, 3^2 I)``, ``scales[k, d] ~ LogNormal(0, 1)``,
    ``corr[k] ~ LKJCholesky(D, 2)``, and for each point ``n`` of the plate ``data``:
    ``c_n ~ Categorical(weights)`` (enumerated: :class:`~quivers.infer.TraceEnum_ELBO` sums
    it out, :func:`~quivers.infer.infer_discrete` recovers it) and
    ``x_n ~ N(locs[c_n], diag(scales[c_n]) corr[c_n] corr[c_n]^T diag(scales[c_n]))``.

    Batch field: ``x`` of shape ``(N, D)``, standardized (the priors are on that scale;
    see :func:`quivers.datasets.load_iris`).

    Parameters
    ----------
    num_components : int
        ``K``.
    num_features : int
        ``D``.
    num_data : int, optional
        ``N`` (the data module sets it).

    Notes
    -----
    The components are exchangeable, so the posterior has ``K!`` symmetric modes (label
    switching) and a guide started at the prior median has every component at the same
    place, where the gradient cannot separate them: start it from a prior draw
    (``init_loc_fn=init_to_sample``), as the config does.
    """

    def __init__(self, num_components: int = 3, num_features: int = 4, num_data: int | None = None) -> None:
        super().__init__()
        k, d = int(num_components), int(num_features)
        self.num_components, self.num_features = k, d
        self.register_buffer("_ones", torch.ones(k))
        self.register_buffer("_loc_prior", torch.zeros(k, d))
        data = Plate("data", size=num_data)
        self.declare(
            Latent("weights", lambda: dist.Dirichlet(self._ones)),
            Latent("locs", lambda: dist.Independent(dist.Normal(self._loc_prior, 3.0), 2)),
            Latent("scales", lambda: dist.Independent(dist.LogNormal(self._loc_prior, 1.0), 2)),
            Latent("corr", lambda: dist.Independent(dist.LKJCholesky(d, 2.0).expand((k,)), 1)),
            Latent("c", lambda weights: dist.Categorical(probs=weights), plate=data, enumerate="parallel"),
            Observed("x", lambda c, locs, scales, corr: dist.MultivariateNormal(
                vindex(locs, c, event_dim=1),
                scale_tril=vindex(scales.unsqueeze(-1) * corr, c, event_dim=2)), plate=data),
        )
