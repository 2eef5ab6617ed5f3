"""Constraints and ``biject_to`` transforms ``torch.distributions`` lacks.

* ``ordered_vector`` (Stan's ``ordered``; Pyro's ``constraints.ordered_vector``): real
  vectors with strictly increasing entries; ``biject_to`` and ``transform_to`` give
  :class:`OrderedTransform`.
* ``sphere`` (Pyro's ``constraints.sphere``): unit-norm real vectors (last dimension).
  It has no ``biject_to``: sites on it are guided through
  :class:`~quivers.program.reparam.ProjectedNormalReparam`.
* ``biject_to(constraints.lower_cholesky)``: :class:`VectorToLowerCholeskyTransform`.
* ``biject_to(constraints.positive_definite)``: :class:`VectorToPositiveDefiniteTransform`.

``torch.distributions`` registers only ``transform_to`` for the last two; its
``LowerCholeskyTransform`` maps a square matrix and ignores the upper triangle, so it is
not a bijection. The transforms here map a vector of the ``n (n + 1) / 2`` free
coordinates instead (as NumPyro and Stan do), so guides can put a density on them.
Importing :mod:`quivers` registers all of them.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Transform, biject_to, constraints, transform_to

__all__ = [
    "ordered_vector",
    "sphere",
    "OrderedTransform",
    "VectorToLowerCholeskyTransform",
    "VectorToPositiveDefiniteTransform",
]


class _OrderedVector(constraints.Constraint):
    """Real vectors (last dimension) with strictly increasing entries."""

    event_dim = 1

    def check(self, value: torch.Tensor) -> torch.Tensor:
        finite = torch.isfinite(value).all(-1)
        return finite & (value[..., 1:] > value[..., :-1]).all(-1)

    def __repr__(self) -> str:
        return "OrderedVector()"


ordered_vector = _OrderedVector()


class _Sphere(constraints.Constraint):
    """Real vectors (last dimension) of Euclidean norm 1, to a relative tolerance of
    ``sqrt(eps)`` of their dtype."""

    event_dim = 1

    def check(self, value: torch.Tensor) -> torch.Tensor:
        tol = torch.finfo(value.dtype).eps ** 0.5 if value.is_floating_point() else 1e-6
        return (value.norm(dim=-1) - 1).abs() <= tol * 10

    def __repr__(self) -> str:
        return "Sphere()"


sphere = _Sphere()


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


def _matrix_size(m: int) -> int:
    """``n`` with ``n (n + 1) / 2 == m``."""
    n = int(round((math.sqrt(8 * m + 1) - 1) / 2))
    if n * (n + 1) // 2 != m:
        raise ValueError(f"a vector of {m} entries is not the lower triangle of a square matrix")
    return n


class VectorToLowerCholeskyTransform(Transform):
    """Real vector of length ``n (n + 1) / 2`` to a lower-triangular matrix with positive
    diagonal (``constraints.lower_cholesky``).

    The vector fills the lower triangle row by row (``torch.tril_indices`` order); the
    diagonal entries are exponentiated (Stan Reference Manual, "Cholesky factors of
    covariance matrices"; NumPyro's ``LowerCholeskyTransform``). ``log|det J|`` is the sum
    of the vector's diagonal entries. Shapes: ``(..., n (n + 1) / 2) -> (..., n, n)``.
    """

    domain = constraints.real_vector
    codomain = constraints.lower_cholesky
    bijective = True

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    @staticmethod
    def _diagonal_positions(n: int, device: torch.device) -> torch.Tensor:
        i = torch.arange(n, device=device)
        return i * (i + 3) // 2  # position of (i, i) in row-major lower-triangle order

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        n = _matrix_size(x.shape[-1])
        rows, cols = torch.tril_indices(n, n, device=x.device)
        diag = self._diagonal_positions(n, x.device)
        x = x.index_copy(-1, diag, x.index_select(-1, diag).exp())
        out = x.new_zeros(x.shape[:-1] + (n, n))
        out[..., rows, cols] = x
        return out

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        n = y.shape[-1]
        rows, cols = torch.tril_indices(n, n, device=y.device)
        y = y.tril(-1) + torch.diag_embed(y.diagonal(dim1=-2, dim2=-1).log())
        return y[..., rows, cols]

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = y.shape[-1]
        return x.index_select(-1, self._diagonal_positions(n, x.device)).sum(-1)

    def forward_shape(self, shape: torch.Size | tuple[int, ...]) -> torch.Size:
        n = _matrix_size(shape[-1])
        return torch.Size(shape[:-1]) + (n, n)

    def inverse_shape(self, shape: torch.Size | tuple[int, ...]) -> torch.Size:
        n = shape[-1]
        return torch.Size(shape[:-2]) + (n * (n + 1) // 2,)


class VectorToPositiveDefiniteTransform(Transform):
    """Real vector of length ``n (n + 1) / 2`` to a symmetric positive-definite matrix
    (``constraints.positive_definite``): ``y = L L^T`` with ``L`` from
    :class:`VectorToLowerCholeskyTransform`.

    ``log|det J| = sum_i x_ii + n log 2 + sum_i (n - i) log L_ii`` (``i = 0 .. n-1``) on
    the free coordinates (the lower triangle of ``y``): the Jacobian of ``L -> L L^T`` is
    ``2^n prod_i L_ii^(n - i)`` (Muirhead 1982, Theorem 2.1.9). Shapes:
    ``(..., n (n + 1) / 2) -> (..., n, n)``.
    """

    domain = constraints.real_vector
    codomain = constraints.positive_definite
    bijective = True

    def __init__(self, cache_size: int = 0) -> None:
        super().__init__(cache_size=cache_size)
        self._cholesky = VectorToLowerCholeskyTransform()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        L = self._cholesky(x)
        return L @ L.mT

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self._cholesky.inv(torch.linalg.cholesky(y))

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = y.shape[-1]
        log_diag = x.index_select(-1, VectorToLowerCholeskyTransform._diagonal_positions(n, x.device))
        powers = torch.arange(n, 0, -1, dtype=x.dtype, device=x.device)  # n - i for i = 0 .. n-1
        return (log_diag * (1 + powers)).sum(-1) + n * math.log(2.0)

    def forward_shape(self, shape: torch.Size | tuple[int, ...]) -> torch.Size:
        return self._cholesky.forward_shape(shape)

    def inverse_shape(self, shape: torch.Size | tuple[int, ...]) -> torch.Size:
        return self._cholesky.inverse_shape(shape)


biject_to.register(type(constraints.lower_cholesky))(lambda constraint: VectorToLowerCholeskyTransform())
biject_to.register(type(constraints.positive_definite))(lambda constraint: VectorToPositiveDefiniteTransform())
