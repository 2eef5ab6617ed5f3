"""Bayesian linear and logistic regression."""

from __future__ import annotations

import torch
from torch import distributions as dist

from ..program import Latent, MonadicProgram, Observed, Plate

__all__ = ["BayesianLinearRegression", "BayesianLogisticRegression"]


def _weights(num_features: int, scale: float) -> dist.Distribution:
    return dist.Independent(dist.Normal(torch.zeros(num_features), scale), 1)


class BayesianLogisticRegression(MonadicProgram):
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
        super().__init__()
        data = Plate("data", size=num_data)
        self.declare(
            Latent("w", lambda: _weights(num_features, prior_scale)),
            Latent("b", lambda: dist.Normal(0.0, prior_scale)),
            Observed("y", lambda w, b, x: dist.Bernoulli(logits=(x * w).sum(-1) + b), plate=data),
        )


class BayesianLinearRegression(MonadicProgram):
    """``w ~ N(0, prior_scale I_D)``, ``b ~ N(0, prior_scale)``, ``sigma ~ HalfNormal(1)``,
    ``y_i ~ N(x_i . w + b, sigma)``.

    Batch fields: ``x`` (N, D), ``y`` (N,). Plate ``data`` (see
    :class:`BayesianLogisticRegression`).
    """

    def __init__(self, num_features: int, prior_scale: float = 1.0, num_data: int | None = None) -> None:
        super().__init__()
        data = Plate("data", size=num_data)
        self.declare(
            Latent("w", lambda: _weights(num_features, prior_scale)),
            Latent("b", lambda: dist.Normal(0.0, prior_scale)),
            Latent("sigma", lambda: dist.HalfNormal(1.0)),
            Observed("y", lambda w, b, sigma, x: dist.Normal((x * w).sum(-1) + b, sigma), plate=data),
        )
