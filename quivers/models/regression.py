"""Bayesian linear and logistic regression."""

from __future__ import annotations

import torch
from torch import distributions as dist

from ..program import Latent, MonadicProgram, Observed, Plate

__all__ = ["BayesianLinearRegression", "BayesianLogisticRegression"]


class _Regression(MonadicProgram):
    """Shared priors: ``w ~ N(0, prior_scale I_D)``, ``b ~ N(0, prior_scale)``, as buffers so
    they follow the model's device and dtype."""

    def __init__(self, num_features: int, prior_scale: float) -> None:
        super().__init__()
        self.register_buffer("w_loc", torch.zeros(num_features))
        self.register_buffer("prior_scale", torch.tensor(float(prior_scale)))
        self.register_buffer("one", torch.tensor(1.0))

    def _w(self) -> dist.Distribution:
        return dist.Independent(dist.Normal(self.w_loc, self.prior_scale), 1)

    def _b(self) -> dist.Distribution:
        return dist.Normal(torch.zeros_like(self.prior_scale), self.prior_scale)


class BayesianLogisticRegression(_Regression):
    """``w ~ N(0, prior_scale I_D)``, ``b ~ N(0, prior_scale)``,
    ``y_i ~ Bernoulli(logits = x_i . w + b)``.

    Batch fields: ``x`` (N, D), ``y`` (N,) in {0, 1}. Plate ``data``, whose size
    (``num_data``) scales the likelihood of minibatches; ``None`` uses the batch as is.

    Parameters
    ----------
    num_features : int
        D.
    prior_scale : float
        Prior standard deviation of the weights and the intercept.
    num_data : int, optional
        Global number of rows (set by ``SVIModule`` from the data module when omitted).
    """

    def __init__(self, num_features: int, prior_scale: float = 1.0, num_data: int | None = None) -> None:
        super().__init__(num_features, prior_scale)
        data = Plate("data", size=num_data)
        self.declare(
            Latent("w", self._w),
            Latent("b", self._b),
            Observed("y", lambda w, b, x: dist.Bernoulli(logits=(x * w).sum(-1) + b), plate=data),
        )


class BayesianLinearRegression(_Regression):
    """``w ~ N(0, prior_scale I_D)``, ``b ~ N(0, prior_scale)``, ``sigma ~ HalfNormal(1)``,
    ``y_i ~ N(x_i . w + b, sigma)``.

    Batch fields: ``x`` (N, D), ``y`` (N,). Plate ``data`` (see
    :class:`BayesianLogisticRegression`).
    """

    def __init__(self, num_features: int, prior_scale: float = 1.0, num_data: int | None = None) -> None:
        super().__init__(num_features, prior_scale)
        data = Plate("data", size=num_data)
        self.declare(
            Latent("w", self._w),
            Latent("b", self._b),
            Latent("sigma", lambda: dist.HalfNormal(self.one)),
            Observed("y", lambda w, b, sigma, x: dist.Normal((x * w).sum(-1) + b, sigma), plate=data),
        )
