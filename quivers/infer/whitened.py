"""``WhitenedAdam``: Adam run in coordinates whitened by a fixed linear map."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ..errors import ConfigError

__all__ = ["WhitenedAdam", "whitened_groups"]


def _apply(p: torch.Tensor, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """``P x`` (or ``P^T x``) along the last dim: ``P`` of ``x``'s shape is diagonal,
    ``P`` of shape ``x.shape + (D,)`` a matrix per batch element."""
    if p.shape == x.shape:
        return p * x
    m = p.mT if transpose else p
    return (m @ x.unsqueeze(-1)).squeeze(-1)


class WhitenedAdam(torch.optim.Adam):
    """Adam whose update of some parameters is made in whitened coordinates.

    A parameter group may hold ``"whiten": P``, a fixed tensor: either the parameter's own
    shape (a diagonal map) or ``param.shape + (D,)`` with ``D = param.shape[-1]`` (a matrix
    per batch element, for example the Cholesky factor of a Laplace covariance). For the
    parameters ``theta`` of that group the step is exactly Adam's on ``a`` with
    ``theta = theta_0 + P a``: the gradient ``P^T dL/dtheta`` is what Adam's moments see, and
    its update ``delta_a`` moves ``theta`` by ``P delta_a``. The parameters themselves,
    their gradients after the step, checkpoints and everything the guide reports stay in
    the model's coordinates; only Adam's moment estimates live in the whitened ones.

    Why: Adam's step has the same size (about ``lr``) in every coordinate it sees. With
    ``P`` the posterior's scale, a step means ``lr`` posterior sds in every direction,
    however differently the directions are scaled or correlated (a regression on an
    uncentred predictor in the thousands), instead of ``lr`` raw units.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups, as for ``torch.optim.Adam``; groups with
        ``"whiten"`` must use ``weight_decay=0`` (a decay of ``a`` is not a decay of
        ``theta``).
    lr, betas, eps, weight_decay, amsgrad, maximize, foreach
        As ``torch.optim.Adam``.

    Raises
    ------
    ConfigError
        If a ``"whiten"`` tensor's shape fits none of its group's parameters, or the group
        has a non-zero weight decay.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, foreach=foreach)
        for group in self.param_groups:
            p_mat = group.get("whiten")
            if p_mat is None:
                continue
            if group.get("weight_decay", 0):
                raise ConfigError("WhitenedAdam: a whitened parameter group needs weight_decay=0")
            for p in group["params"]:
                if p_mat.shape != p.shape and p_mat.shape != p.shape + p.shape[-1:]:
                    raise ConfigError(
                        f"WhitenedAdam: whiten has shape {tuple(p_mat.shape)}, expected {tuple(p.shape)} (diagonal) "
                        f"or {tuple(p.shape + p.shape[-1:])} (a matrix) for a parameter of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One Adam step; whitened groups as described above."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        saved = []
        for group in self.param_groups:
            p_mat = group.get("whiten")
            if p_mat is None:
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                saved.append((p, p.detach().clone(), p.grad, p_mat))
                p.grad = _apply(p_mat.to(p.grad), p.grad, transpose=True)
        super().step()
        for p, old, grad, p_mat in saved:
            p.copy_(old + _apply(p_mat.to(p), p - old))
            p.grad = grad
        return loss


def whitened_groups(params: Iterable[torch.nn.Parameter], whiten: list[tuple[torch.nn.Parameter, torch.Tensor]]
                    ) -> list[dict[str, Any]]:
    """Parameter groups for :class:`WhitenedAdam`: one group per parameter of ``params``,
    with ``"whiten": P`` for the parameters listed in ``whiten`` and ``None`` for the others
    (one group each, so the groups of a resumed fit line up with the checkpoint's whatever
    was whitened)."""
    maps = {id(p): m for p, m in whiten}
    return [{"params": [p], "whiten": None if id(p) not in maps else maps[id(p)].detach().to(p)} for p in params]
