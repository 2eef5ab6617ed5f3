"""A change-point model of counts: the switch time is summed out (enumerated)."""

from __future__ import annotations

import torch
from torch import distributions as dist

from ..program import Latent, MonadicProgram, Observed, Plate

__all__ = ["ChangePoint"]


class ChangePoint(MonadicProgram):
    """Poisson counts whose rate changes once: ``tau ~ Uniform{0, ..., T - 1}`` (the first
    step at the late rate; enumerated), ``early, late ~ Exponential(1 / prior_mean)`` and
    ``y_t ~ Poisson(early if t < tau else late)`` along the plate ``time`` (the classic
    coal-mining-disasters model).

    ``tau`` sits outside the plate and every count depends on it, so
    :class:`~quivers.infer.TraceEnum_ELBO` keeps its ``T`` values through the sum over
    time and then sums them: ``O(T^2)`` work, against ``T`` separate fits.

    Batch field: ``y`` of shape ``(T,)`` (see :class:`quivers.datasets.ChangePointData`).

    Parameters
    ----------
    num_steps : int
        ``T`` (the support of ``tau`` is fixed when the model is built).
    prior_mean : float
        Prior mean of the two rates.
    """

    def __init__(self, num_steps: int, prior_mean: float = 3.0) -> None:
        super().__init__()
        self.num_steps = int(num_steps)
        self.register_buffer("_tau_logits", torch.zeros(self.num_steps))
        self.register_buffer("_rate", torch.tensor(1.0 / float(prior_mean)))
        time = Plate("time", size=self.num_steps)
        self.declare(
            Latent("tau", lambda: dist.Categorical(logits=self._tau_logits), enumerate="parallel"),
            Latent("early", lambda: dist.Exponential(self._rate)),
            Latent("late", lambda: dist.Exponential(self._rate)),
            Observed("y", lambda tau, early, late, time: dist.Poisson(torch.where(time < tau, early, late)),
                     plate=time),
        )
