"""A hidden Markov model with Gaussian emissions, its hidden chain summed out."""

from __future__ import annotations

import torch
from torch import distributions as dist

from ..program import Latent, Markov, MonadicProgram, Observed, Plate, vindex

__all__ = ["GaussianHMM"]


class GaussianHMM(MonadicProgram):
    """``z_t`` a Markov chain over ``K`` states with transition matrix ``trans`` (rows
    ``~ Dirichlet(1 + (K - 1) I)``, which favours staying), ``z_0`` uniform, and
    ``y_t ~ N(locs[z_t], scale)`` along the plate ``time``.

    ``locs[k] ~ N(m_k, 1)`` with prior means ``m`` evenly spaced on ``[-2, 2]``: distinct
    prior means order the states, so the posterior has one labelling, not ``K!``.
    ``scale ~ LogNormal(0, 1)``. The chain is a :class:`~quivers.program.Markov` site:
    :class:`~quivers.infer.TraceEnum_ELBO` sums it out with the forward algorithm, and
    :func:`~quivers.infer.infer_discrete` gives the Viterbi path or posterior draws.

    Batch field: ``y`` of shape ``(T,)`` (see :class:`quivers.datasets.HMMData`).

    Parameters
    ----------
    num_states : int
        ``K``.
    num_steps : int, optional
        ``T`` (the data module sets it).
    """

    def __init__(self, num_states: int = 3, num_steps: int | None = None) -> None:
        super().__init__()
        k = int(num_states)
        self.num_states = k
        self.register_buffer("_concentration", torch.ones(k, k) + (k - 1) * torch.eye(k))
        self.register_buffer("_loc_means", torch.linspace(-2.0, 2.0, k) if k > 1 else torch.zeros(1))
        self.register_buffer("_init_logits", torch.zeros(k))
        time = Plate("time", size=num_steps)
        self.declare(
            Latent("trans", lambda: dist.Independent(dist.Dirichlet(self._concentration), 1)),
            Latent("locs", lambda: dist.Independent(dist.Normal(self._loc_means, 1.0), 1)),
            Latent("scale", lambda: dist.LogNormal(0.0, 1.0)),
            Markov("z", init=lambda: dist.Categorical(logits=self._init_logits),
                   transition=lambda prev, trans: dist.Categorical(probs=vindex(trans, prev, event_dim=1)),
                   plate=time),
            Observed("y", lambda z, locs, scale: dist.Normal(vindex(locs, z), scale), plate=time),
        )
