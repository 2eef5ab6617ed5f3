"""Shared test helpers: fitting with a decaying learning rate, a short Trainer, standard models."""

from __future__ import annotations

import math
import pathlib
from typing import Any

import lightning as L
import torch
from torch import distributions as dist

from quivers import Latent, MonadicProgram, Observed, Plate
from quivers.infer import SVI, Trace_ELBO


def short_trainer(root: pathlib.Path, steps: int = 2, **kwargs: Any) -> L.Trainer:
    """A quiet CPU ``Trainer`` for a few steps (no logger, no automatic checkpoints)."""
    return L.Trainer(max_steps=steps, default_root_dir=root, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", **kwargs)


def fit(model, guide, batch, steps=1500, lr=0.05, num_particles=8, final_lr_frac=0.01):
    """Adam with an exponentially decaying learning rate, so the final iterate sits
    close to the optimum (SGD noise shrinks with the step size)."""
    optim = torch.optim.Adam(guide.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(optim, gamma=final_lr_frac ** (1 / steps))
    svi = SVI(model, guide, optim, Trace_ELBO(num_particles=num_particles))
    losses = []
    for _ in range(steps):
        losses.append(svi.step(batch))
        sched.step()
    return losses


class NormalNormal(MonadicProgram):
    """z ~ N(m0, s0); y_i ~ N(z, s), i < N: posterior and evidence in closed form."""

    def __init__(self, n, m0=0.0, s0=2.0, s=1.0):
        super().__init__()
        self.m0, self.s0, self.s = m0, s0, s
        data = Plate("data", size=n)
        self.declare(
            Latent("z", lambda: dist.Normal(m0, s0)),
            Observed("y", lambda z: dist.Normal(z, s), plate=data),
        )

    def posterior(self, y):
        prec = 1 / self.s0**2 + len(y) / self.s**2
        mean = (self.m0 / self.s0**2 + y.sum() / self.s**2) / prec
        return float(mean), float(prec**-0.5)

    def log_evidence(self, y):
        n = len(y)
        cov = self.s**2 * torch.eye(n) + self.s0**2 * torch.ones(n, n)
        return float(dist.MultivariateNormal(torch.full((n,), self.m0), cov).log_prob(y))


class LocalNormal(MonadicProgram):
    """z_i ~ N(0, s0); y_i ~ N(z_i, s) independently: posterior N(y s0^2/(s0^2+s^2), ...)."""

    def __init__(self, n, s0=1.0, s=1.0, subsample_size=None):
        super().__init__()
        self.s0, self.s = s0, s
        data = Plate("data", size=n, subsample_size=subsample_size)
        self.declare(
            Latent("z", lambda: dist.Normal(0.0, s0), plate=data),
            Observed("y", lambda z: dist.Normal(z, s), plate=data),
        )

    def posterior(self, y):
        v = 1 / (1 / self.s0**2 + 1 / self.s**2)
        return y * v / self.s**2, math.sqrt(v)


def perturbed(guide, scale: float = 0.2, seed: int = 0):
    """``guide`` with every parameter moved by ``scale`` times standard Normal noise (a
    generic point, not the initial one), in place; returns it."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return guide
