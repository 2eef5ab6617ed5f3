"""Shared pieces of the ported anchor tests: the guide families and small helpers."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import distributions as dist
from torch.distributions import constraints

from quivers.guides import (
    AutoBNAFNormal,
    AutoDelta,
    AutoDiagonalNormal,
    AutoIAFNormal,
    AutoLaplaceApproximation,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from quivers.infer import SVI, Trace_ELBO

GAUSSIAN = [AutoDiagonalNormal, AutoMultivariateNormal, AutoNormal, AutoLowRankMultivariateNormal]
WITH_DELTA = [AutoDelta, *GAUSSIAN]
ALL = [AutoDelta, *GAUSSIAN, AutoIAFNormal, AutoLaplaceApproximation]
NUMPYRO = [AutoDiagonalNormal, AutoIAFNormal, AutoBNAFNormal, AutoMultivariateNormal, AutoLaplaceApproximation,
           AutoLowRankMultivariateNormal, AutoNormal, AutoDelta]
# the flows' variants of the long NumPyro fits take 15-55 s each: in the slow suite (make test-slow)
NUMPYRO_FAST_FLOWS_SLOW = [pytest.param(g, marks=pytest.mark.slow) if g in (AutoIAFNormal, AutoBNAFNormal) else g
                           for g in NUMPYRO]


def name(x) -> str:  # noqa: ANN001
    return getattr(x, "__name__", None) or getattr(getattr(x, "func", None), "__name__", repr(x))


def run_svi(model, guide, batch=None, steps=100, lr=0.05, betas=(0.9, 0.999), num_particles=1, loss=None,
            settle=0):  # noqa: ANN001
    """Adam at a constant learning rate, as the anchors' tests run it; returns the losses.

    ``settle`` further steps decay the learning rate exponentially to a tenth: at a
    constant rate Adam's iterates keep a stationary noise of a fixed size whatever the
    gradient noise (its step is normalised), which for the anchors' ``test_median``
    setting is 0.03-0.055 sd per coordinate (measured over 12 seeds), so their tolerance
    of 0.1 would decide on the seed; the settling phase shrinks that noise ~3-fold.
    """
    optim = torch.optim.Adam(guide.parameters(), lr=lr, betas=betas)
    svi = SVI(model, guide, optim, loss or Trace_ELBO(num_particles=num_particles))
    losses = [svi.step(batch) for _ in range(steps)]
    if settle:
        sched = torch.optim.lr_scheduler.ExponentialLR(optim, gamma=0.1 ** (1 / settle))
        for _ in range(settle):
            losses.append(svi.step(batch))
            sched.step()
    return losses


def step_fn(deps: list[str], body):  # noqa: ANN001
    """A step function whose dependencies are ``deps`` (names built in a loop), calling
    ``body`` with their values in that order."""

    def fn(**kwargs):  # noqa: ANN003
        return body(*(kwargs[d] for d in deps))

    fn.__signature__ = inspect.Signature(
        [inspect.Parameter(d, inspect.Parameter.KEYWORD_ONLY) for d in deps])
    return fn


class Delta(dist.Distribution):
    """A point mass (Pyro's ``dist.Delta``): ``log_prob`` is 0 at the point."""

    arg_constraints = {"v": constraints.real}
    support = constraints.real
    has_rsample = True

    def __init__(self, v: torch.Tensor) -> None:
        self.v = torch.as_tensor(v)
        super().__init__(self.v.shape, validate_args=False)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:  # noqa: ANN001
        return self.v.expand(torch.Size(sample_shape) + self.v.shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return torch.where(value == self.v, 0.0, -float("inf")).to(value.dtype)
