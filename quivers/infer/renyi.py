"""``RenyiELBO``: the variational Renyi bound, the IWAE bound at ``alpha = 0``, with DReG."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import ConfigError, GuideError
from ..guides.guide import Guide
from ..program import MonadicProgram
from .elbo import ELBO, weighted_draws
from .enumerated import model_log_density

__all__ = ["RenyiELBO"]


class RenyiELBO(ELBO):
    """The variational Renyi bound (Li & Turner 2016; Pyro's and NumPyro's ``RenyiELBO``).

    With ``K = num_particles`` draws ``z_k ~ q`` and log weights
    ``log w_k = log p(x, z_k) - log q(z_k)``, the objective is

    ``L_alpha = 1 / (1 - alpha) * log( (1/K) sum_k w_k^(1 - alpha) )``,

    a lower bound of ``log p(x)`` in expectation for ``alpha >= 0`` that tightens as
    ``alpha`` falls: ``alpha = 0`` is the importance-weighted (IWAE) bound of Burda,
    Grosse & Salakhutdinov (2016), which rises with ``K`` towards ``log p(x)``, and
    ``alpha -> 1`` is the ELBO (``alpha = 1`` exactly is the ELBO's estimate). The loss is
    ``-L_alpha``; gradients are reparameterised through the estimate.

    Parameters
    ----------
    alpha : float
        The Renyi order, ``>= 0`` (default 0: IWAE).
    num_particles : int
        ``K``, the draws the bound is formed from (default 2; at least 2 unless
        ``alpha = 1``, where one draw gives the ELBO).
    vectorize_particles : bool
        See :class:`ELBO`.
    dreg : bool
        The doubly reparameterised gradient estimator of the IWAE bound (Tucker, Lawson, Gu
        & Maddison 2018; ``alpha = 0`` only): the guide's gradient is
        ``sum_k w~_k^2 d/dphi log w_k`` with ``w~`` the normalised weights and ``log q``'s
        parameters held fixed (the path derivative), which has far lower variance than the
        standard estimator and the same expectation. Model parameters keep the IWAE
        gradient ``sum_k w~_k d/dtheta log p(x, z_k)`` (one more model trace per step
        when the model has trainable parameters). The value is the IWAE bound either way.

    Raises
    ------
    ConfigError
        If ``alpha`` is negative or not finite, ``num_particles < 2`` with
        ``alpha != 1``, or ``dreg=True`` with ``alpha != 0``.
    GuideError
        At the first step, if the guide is not reparameterised (the bound's gradient here
        is the reparameterised one).
    """

    def __init__(self, alpha: float = 0.0, num_particles: int = 2, vectorize_particles: bool = True,
                 dreg: bool = False) -> None:
        super().__init__(num_particles, vectorize_particles)
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
            raise ConfigError(f"RenyiELBO: alpha must be a finite number >= 0, got {alpha!r}")
        if alpha != 1 and self.num_particles < 2:
            raise ConfigError(f"RenyiELBO: num_particles must be at least 2 for alpha != 1 (with one draw every "
                              f"alpha gives the ELBO), got {self.num_particles}")
        if dreg and alpha != 0:
            raise ConfigError(f"RenyiELBO: dreg=True is the IWAE bound's estimator and needs alpha=0, got {alpha!r}")
        self.alpha = float(alpha)
        self.dreg = bool(dreg)

    def _particles(self, model: MonadicProgram, guide: Guide, batch: Mapping[str, Any], ss: torch.Size) -> torch.Tensor:
        return self._weighted(model, guide, batch, ss)[1]

    def _weighted(self, model: MonadicProgram, guide: Guide, batch: Mapping[str, Any],
                  ss: torch.Size) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        if not guide.has_rsample:
            raise GuideError(f"RenyiELBO needs a reparameterised guide; {type(guide).__name__} is not")
        if self.vectorize_particles:
            return weighted_draws(model, guide, batch, ss, detach_guide=self.dreg)
        parts = [weighted_draws(model, guide, batch, torch.Size((1,)), detach_guide=self.dreg) for _ in range(ss[0])]
        return ({k: torch.cat([z[k] for z, _ in parts]) for k in parts[0][0]}, torch.cat([w for _, w in parts]))

    def forward(self, model: MonadicProgram, guide: Guide, batch: Mapping[str, Any] | None = None) -> torch.Tensor:
        """The loss ``-L_alpha`` (a scalar)."""
        prepared = model.prepare(batch)
        ss = torch.Size((self.num_particles,))
        z, log_w = self._weighted(model, guide, prepared, ss)
        if self.alpha == 1.0:
            return -log_w.mean()
        k = math.log(self.num_particles)
        if not self.dreg:
            scaled = (1.0 - self.alpha) * log_w
            return -(torch.logsumexp(scaled, 0) - k) / (1.0 - self.alpha)
        # DReG: the IWAE bound's value; gradient sum_k w~_k^2 dlog w_k through z (the guide's
        # path derivative) plus the model parameters' IWAE gradient sum_k w~_k dlog p
        w = torch.softmax(log_w.detach(), 0)
        bound = torch.logsumexp(log_w.detach(), 0) - k
        surrogate = (w.square() * log_w).sum()
        if any(p.requires_grad for p in model.parameters()):
            fixed = model_log_density(model, prepared, {name: v.detach() for name, v in z.items()}, ss)[0]
            surrogate = surrogate + ((w - w.square()) * fixed).sum()
        return -(bound + surrogate - surrogate.detach())
