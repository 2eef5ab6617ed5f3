"""``TraceTailAdaptive_ELBO``: the tail-adaptive f-divergence (Wang, Liu & Liu 2018)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..errors import ConfigError, GuideError
from ..guides.guide import Guide
from ..program import MonadicProgram
from .elbo import ELBO, weighted_draws

__all__ = ["TraceTailAdaptive_ELBO"]


class TraceTailAdaptive_ELBO(ELBO):
    """Variational inference with the tail-adaptive f-divergence (Wang, Liu & Liu 2018,
    "Variational inference with tail-adaptive f-divergence"; Pyro's ``TraceTailAdaptive_ELBO``).

    With ``K = num_particles`` reparameterised draws and their log weights
    ``log w_k = log p(x, z_k) - log q(z_k)``, the guide follows the gradient
    ``sum_k gamma_k d/dphi log w_k`` with ``gamma_k ∝ F(w_k)^beta``, where ``F`` is the
    empirical distribution function of the weights, ``F(w_k) = #{j : w_j <= w_k} / K``
    (its rank among the particles over ``K``), normalised and held fixed. With ``beta =
    -1`` (Pyro's default) the particle with the smallest weight counts ``K`` times the
    largest's: the weights depend only on the ranks, so their variance is bounded whatever
    the tail of ``p / q``, where the ``alpha``-divergences' weights ``w^(1 - alpha)`` can
    have infinite variance. At ``q = p`` every weight is the evidence, and the exact
    posterior is a fixed point. (Pyro's implementation indexes ``gamma`` by the sorting
    permutation instead of the ranks, so a particle's weight does not follow its own
    ``w``; here it does.)

    The loss's *value* is the negative ELBO estimate (the divergence has no closed-form
    value); only its gradient is the tail-adaptive one.

    Parameters
    ----------
    num_particles : int
        ``K``, at least 2.
    vectorize_particles : bool
        Must be ``True`` (the ranks need every particle at once), as Pyro requires.
    tail_adaptive_beta : float
        ``beta``, negative (default -1).

    Raises
    ------
    ConfigError
        If ``num_particles < 2``, ``vectorize_particles`` is false or ``tail_adaptive_beta``
        is not negative.
    GuideError
        At the first step, if the guide is not reparameterised.
    """

    def __init__(self, num_particles: int = 2, vectorize_particles: bool = True,
                 tail_adaptive_beta: float = -1.0) -> None:
        super().__init__(num_particles, vectorize_particles)
        if self.num_particles < 2:
            raise ConfigError(f"TraceTailAdaptive_ELBO: num_particles must be at least 2, got {num_particles!r}")
        if not self.vectorize_particles:
            raise ConfigError("TraceTailAdaptive_ELBO needs vectorize_particles=True (the ranks use every particle)")
        if not (isinstance(tail_adaptive_beta, (int, float)) and tail_adaptive_beta < 0):
            raise ConfigError(
                f"TraceTailAdaptive_ELBO: tail_adaptive_beta must be negative, got {tail_adaptive_beta!r}")
        self.tail_adaptive_beta = float(tail_adaptive_beta)

    def forward(self, model: MonadicProgram, guide: Guide, batch: Mapping[str, Any] | None = None) -> torch.Tensor:
        """The surrogate loss: value ``-ELBO``, gradient the tail-adaptive one."""
        if not guide.has_rsample:
            raise GuideError(f"TraceTailAdaptive_ELBO needs a reparameterised guide; {type(guide).__name__} is not")
        prepared = model.prepare(batch)
        log_w = weighted_draws(model, guide, prepared, torch.Size((self.num_particles,)))[1]
        gamma = self.rank_weights(log_w.detach())
        surrogate = (gamma * log_w).sum()
        elbo = log_w.detach().mean()
        return -(elbo + surrogate - surrogate.detach())

    def rank_weights(self, log_w: torch.Tensor) -> torch.Tensor:
        """``gamma_k ∝ (#{j : w_j <= w_k})^beta``, normalised, from the log weights ``(K,)``
        (ties get distinct ranks, in ``argsort``'s order); shape ``(K,)``."""
        order = torch.argsort(log_w)
        tail = torch.empty_like(log_w)
        tail[order] = torch.arange(1, len(log_w) + 1, dtype=log_w.dtype, device=log_w.device)
        gamma = tail.pow(self.tail_adaptive_beta)
        return gamma / gamma.sum()
