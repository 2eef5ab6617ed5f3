"""Transforms the guides need that ``torch.distributions`` does not define."""

from __future__ import annotations

import torch
from torch.distributions import Transform, constraints
from torch.distributions.transforms import ComposeTransform as T_Compose

__all__ = ["LowerCholeskyAffine", "call_and_log_det", "inv_softplus", "is_increasing"]


def call_and_log_det(transform: Transform, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = transform(x)`` and ``log|det dy/dx|`` in one pass through its parts.

    The value of ``ComposeTransform.log_abs_det_jacobian(x, transform(x))``, with each
    part's log-determinant summed over the event dims it lacks exactly as
    ``ComposeTransform`` does, but without re-running the parts: torch's version recomputes
    every intermediate value (``part(x)``), and a zuko autoregressive transform's
    log-determinant re-runs its network, so a stack of them evaluated each network three
    times per draw. Parts that offer zuko's ``call_and_ladj`` use it (one network pass for
    the value and the log-determinant); others are called, then asked for their
    log-determinant at the known output.

    Parameters
    ----------
    transform : Transform
        Any ``torch.distributions`` transform (a ``ComposeTransform`` is walked part by
        part, recursively).
    x : Tensor
        Input of shape ``batch_shape + event_shape`` of ``transform.domain``.

    Returns
    -------
    (Tensor, Tensor)
        ``y``, and the log-determinant of shape ``batch_shape`` (``x.shape`` less
        ``transform.domain.event_dim`` dims).
    """
    from torch.distributions.utils import _sum_rightmost

    parts = transform.parts if isinstance(transform, T_Compose) else [transform]
    event_dim = transform.domain.event_dim
    total: torch.Tensor | None = None
    for part in parts:
        if isinstance(part, T_Compose):
            y, ladj = call_and_log_det(part, x)
        elif hasattr(part, "call_and_ladj"):
            y, ladj = part.call_and_ladj(x)
        else:
            y = part(x)
            ladj = part.log_abs_det_jacobian(x, y)
        ladj = _sum_rightmost(ladj, event_dim - part.domain.event_dim)
        total = ladj if total is None else total + ladj
        event_dim += part.codomain.event_dim - part.domain.event_dim
        x = y
    if total is None:  # an empty composition is the identity
        return x, torch.zeros_like(_sum_rightmost(x, transform.domain.event_dim))
    return x, total


def inv_softplus(y: torch.Tensor | float) -> torch.Tensor:
    """Inverse of ``softplus`` for positive ``y``: ``y + log(-expm1(-y))``."""
    y = torch.as_tensor(y, dtype=torch.get_default_dtype()) if not isinstance(y, torch.Tensor) else y
    return y + torch.log(-torch.expm1(-y))


def is_increasing(t: Transform | None) -> bool:
    """Whether ``t`` acts elementwise and is increasing in every coordinate, so that it
    maps marginal quantiles to marginal quantiles (``biject_to`` of real, positive,
    ``greater_than``, interval and unit-interval supports; not ``less_than``'s decreasing
    map, nor stick-breaking or Cholesky transforms, which mix coordinates)."""
    from torch.distributions import transforms as T

    if isinstance(t, T.ComposeTransform):
        return all(is_increasing(p) for p in t.parts)
    if isinstance(t, T.IndependentTransform):
        return is_increasing(t.base_transform)
    if isinstance(t, (T.ExpTransform, T.SigmoidTransform, T.SoftplusTransform, T.TanhTransform)):
        return True
    if isinstance(t, T.AffineTransform):
        return bool((torch.as_tensor(t.scale) > 0).all())
    return False


class LowerCholeskyAffine(Transform):
    """``y = loc + scale_tril @ x`` on the last dimension (event dim 1).

    Parameters
    ----------
    loc : torch.Tensor
        Shape ``batch_shape + (D,)``.
    scale_tril : torch.Tensor
        Lower-triangular with positive diagonal, shape ``batch_shape + (D, D)``.

    Notes
    -----
    ``log|det J| = sum(log diag(scale_tril))``, the same for every ``x``; the inverse
    is a triangular solve.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, loc: torch.Tensor, scale_tril: torch.Tensor, cache_size: int = 0) -> None:
        super().__init__(cache_size=cache_size)
        self.loc = loc
        self.scale_tril = scale_tril

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LowerCholeskyAffine) and self.loc is other.loc and self.scale_tril is other.scale_tril

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return self.loc + (self.scale_tril @ x.unsqueeze(-1)).squeeze(-1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        rhs = (y - self.loc).unsqueeze(-1)
        tril = self.scale_tril.expand(rhs.shape[:-2] + self.scale_tril.shape[-2:])
        return torch.linalg.solve_triangular(tril, rhs, upper=False).squeeze(-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ld = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return ld.expand(x.shape[:-1])
