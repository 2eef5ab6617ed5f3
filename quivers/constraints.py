"""Constraints ``torch.distributions`` lacks, with their ``biject_to`` transforms.

``ordered_vector`` (Stan's ``ordered``; Pyro's ``constraints.ordered_vector``): real
vectors with strictly increasing entries. Importing :mod:`quivers` registers
``biject_to(ordered_vector)`` and ``transform_to(ordered_vector)`` as
:class:`OrderedTransform`.
"""

from __future__ import annotations

import torch
from torch.distributions import Transform, biject_to, constraints, transform_to

__all__ = ["ordered_vector", "OrderedTransform"]


class _OrderedVector(constraints.Constraint):
    """Real vectors (last dimension) with strictly increasing entries."""

    event_dim = 1

    def check(self, value: torch.Tensor) -> torch.Tensor:
        finite = torch.isfinite(value).all(-1)
        return finite & (value[..., 1:] > value[..., :-1]).all(-1)

    def __repr__(self) -> str:
        return "OrderedVector()"


ordered_vector = _OrderedVector()


class OrderedTransform(Transform):
    """Real vector to ordered vector: ``y_1 = x_1``, ``y_i = y_(i-1) + exp(x_i)`` (Stan's
    ``ordered`` transform; Stan Reference Manual, "Ordered vector").

    ``log|det J| = sum_(i >= 2) x_i``.
    """

    domain = constraints.real_vector
    codomain = ordered_vector
    bijective = True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OrderedTransform)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[..., :1], x[..., 1:].exp()], -1).cumsum(-1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([y[..., :1], (y[..., 1:] - y[..., :-1]).log()], -1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x[..., 1:].sum(-1)


biject_to.register(_OrderedVector)(lambda constraint: OrderedTransform())
transform_to.register(_OrderedVector)(lambda constraint: OrderedTransform())
