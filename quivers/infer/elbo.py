"""Evidence lower bound objectives as ``nn.Module`` s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..guides.guide import Guide
from ..program import MonadicProgram
from ..spec import Recordable

__all__ = ["ELBO", "Trace_ELBO"]


class ELBO(Recordable, nn.Module):
    """Base class of ELBO objectives: ``forward(model, guide, batch)`` is the loss.

    The loss is the negative ELBO, ``-E_q[log p(data, z) - log q(z)]``, estimated
    with ``num_particles`` draws from the guide and averaged over them. Particles are
    vectorised along a leading ``sample_shape = (num_particles,)`` (no Python loop) unless
    ``vectorize_particles=False``, for models whose step functions do not broadcast.

    Parameters
    ----------
    num_particles : int
        Number of Monte Carlo draws per step.
    vectorize_particles : bool
        Draw all particles in one vectorised pass (default) or loop over them.

    Raises
    ------
    ValueError
        If ``num_particles`` is not a positive integer.
    """

    def __init__(self, num_particles: int = 1, vectorize_particles: bool = True) -> None:
        super().__init__()
        if int(num_particles) != num_particles or num_particles < 1:
            raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
        self.num_particles = int(num_particles)
        self.vectorize_particles = bool(vectorize_particles)

    def particle_elbos(self, model: MonadicProgram, guide: Guide, batch: Mapping[str, Any] | None) -> torch.Tensor:
        """Per-particle surrogate ELBO (its value is the ELBO; its gradient the estimator).

        Returns
        -------
        torch.Tensor
            Shape ``(num_particles,)``.
        """
        batch = model.prepare(batch)
        if self.vectorize_particles:
            return self._particles(model, guide, batch, torch.Size((self.num_particles,)))
        return torch.cat([self._particles(model, guide, batch, torch.Size((1,))) for _ in range(self.num_particles)])

    def _particles(self, model: MonadicProgram, guide: Guide, batch: Mapping[str, Any], ss: torch.Size) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, model: MonadicProgram, guide: Guide, batch: Mapping[str, Any] | None = None) -> torch.Tensor:
        """Differentiable loss: the negative ELBO averaged over particles (a scalar)."""
        return -self.particle_elbos(model, guide, batch).mean()

    differentiable_loss = forward

    @torch.no_grad()
    def loss(self, model: MonadicProgram, guide: Guide, batch: Mapping[str, Any] | None = None) -> float:
        """The negative ELBO as a float, without gradients."""
        return float(self.forward(model, guide, batch))


class Trace_ELBO(ELBO):
    """Monte Carlo ELBO with reparameterised gradients (Pyro's ``Trace_ELBO``).

    For guides whose samples are reparameterised (``guide.has_rsample``), the gradient
    is that of ``log p(x, z) - log q(z)`` at ``z = g(eps, phi)`` (Kingma & Welling 2014).
    For guides that set ``has_rsample = False`` the samples are detached and the
    score-function term ``log q(z) * stop_grad(log p - log q)`` is added (Williams 1992;
    Ranganath et al. 2014, "Black Box Variational Inference").

    Parameters
    ----------
    num_particles, vectorize_particles
        See :class:`ELBO`.
    """

    def _particles(self, model: MonadicProgram, guide: Guide, batch: Mapping[str, Any], ss: torch.Size) -> torch.Tensor:
        if guide.has_rsample:
            z, log_q = guide.rsample_and_log_prob(batch, ss)
        else:
            z = {k: v.detach() for k, v in guide.rsample(batch, ss).items()}
            log_q = guide.log_prob(batch, z)
        elbo = model.trace(batch, z, ss).log_joint() - log_q
        if not guide.has_rsample:
            surrogate = elbo + log_q * elbo.detach()
            elbo = elbo.detach() + (surrogate - surrogate.detach())
        return elbo
