"""Block neural autoregressive flow (De Cao, Titov & Aziz 2019), the sampling direction only.

zuko has no BNAF, so this file builds one from ``torch``: masked block-triangular linear
layers with weight normalisation, ``tanh`` between them, and the log-determinant from the
diagonal blocks of the Jacobian, accumulated in log space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Transform, constraints

__all__ = ["BlockNAF", "BlockNAFTransform"]


class _MaskedBlockLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` block lower-triangular over ``d`` blocks of size
    ``(out_factor, in_factor)``: diagonal blocks positive (``exp`` of the parameter),
    blocks above the diagonal zero, rows weight-normalised (``W = exp(g) V / ||V||_row``)."""

    def __init__(self, d: int, in_factor: int, out_factor: int) -> None:
        super().__init__()
        self.d, self.a_in, self.a_out = d, in_factor, out_factor
        rows, cols = d * out_factor, d * in_factor
        block_row = torch.arange(rows) // out_factor
        block_col = torch.arange(cols) // in_factor
        self.register_buffer("diag_mask", (block_row[:, None] == block_col[None, :]), persistent=False)
        self.register_buffer("lower_mask", (block_row[:, None] > block_col[None, :]), persistent=False)
        # the diagonal blocks' entries, row by row, as integer indices (no data-dependent shapes)
        self.register_buffer("diag_index", self.diag_mask.reshape(-1).nonzero().squeeze(-1), persistent=False)
        weight = torch.empty(rows, cols)
        nn.init.uniform_(weight, -math.sqrt(1 / cols), math.sqrt(1 / cols))
        self.weight = nn.Parameter(weight)
        self.log_norm = nn.Parameter(torch.log(torch.rand(rows, 1).clamp_min(1e-3)))
        self.bias = nn.Parameter(torch.empty(rows).uniform_(-math.sqrt(1 / rows), math.sqrt(1 / rows)))

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised weight matrix and the log of its diagonal blocks, ``(d, out, in)``."""
        v = torch.where(self.diag_mask, self.weight.exp(), self.weight * self.lower_mask)
        row_sq = (v * v).sum(-1, keepdim=True)
        w = self.log_norm.exp() * v / row_sq.sqrt()
        log_diag = self.weight + self.log_norm - 0.5 * row_sq.log()  # log of w on the diagonal blocks
        blocks = log_diag.reshape(-1).index_select(0, self.diag_index).reshape(self.d, self.a_out, self.a_in)
        return w, blocks


class BlockNAF(nn.Module):
    """One block neural autoregressive flow ``R^d -> R^d``: strictly increasing in each
    coordinate given the earlier ones (its Jacobian is lower triangular with a positive
    diagonal).

    Parameters
    ----------
    d : int
        Dimension.
    hidden_factors : sequence of int
        Units per dimension of each hidden layer (De Cao et al.'s ``a``); default ``(8, 8)``.

    Notes
    -----
    Only the forward direction has a closed form (there is no analytic inverse).
    """

    def __init__(self, d: int, hidden_factors: Sequence[int] = (8, 8)) -> None:
        super().__init__()
        factors = [1, *(int(a) for a in hidden_factors), 1]
        self.d = int(d)
        self.layers = nn.ModuleList(_MaskedBlockLinear(d, a, b) for a, b in zip(factors[:-1], factors[1:], strict=True))

    def forward_and_log_det(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``y = f(x)`` and ``log|det df/dx|``, shapes ``x.shape`` and ``x.shape[:-1]``."""
        # log of the diagonal Jacobian blocks of the layers so far: (..., d, units, 1)
        log_j: torch.Tensor | None = None
        h = x
        for i, layer in enumerate(self.layers):
            w, blocks = layer.weights()
            h = F.linear(h, w, layer.bias)
            log_j = blocks.expand(h.shape[:-1] + blocks.shape) if log_j is None else torch.logsumexp(
                blocks.unsqueeze(-1) + log_j.unsqueeze(-3), dim=-2)
            if i < len(self.layers) - 1:  # tanh between layers: log(1 - tanh(h)^2), stable form
                log_deriv = 2 * (math.log(2.0) - h - F.softplus(-2 * h))
                log_j = log_j + log_deriv.reshape(h.shape[:-1] + (self.d, -1, 1))
                h = torch.tanh(h)
        return h, log_j.reshape(h.shape[:-1] + (self.d,)).sum(-1)


class BlockNAFTransform(Transform):
    """A ``torch.distributions.Transform`` view of a :class:`BlockNAF` (event dim 1).

    ``log_abs_det_jacobian(x, y)`` reuses the value cached by the last call on ``x``
    (computed in the same pass), so sampling plus density is one pass.

    Raises
    ------
    NotImplementedError
        On ``inv``: BNAF has no analytic inverse.
    """

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.independent(constraints.real, 1)
    bijective = True
    sign = +1

    def __init__(self, flow: BlockNAF) -> None:
        super().__init__(cache_size=1)
        self.flow = flow
        self._log_det: tuple[torch.Tensor, torch.Tensor] | None = None

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        y, log_det = self.flow.forward_and_log_det(x)
        self._log_det = (x, log_det)
        return y

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            "a block neural autoregressive flow has no analytic inverse: the density of a given value is not "
            "available (rsample_and_log_prob, which the ELBO uses, is)")

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._log_det is None or self._log_det[0] is not x:
            self._call(x)
        return self._log_det[1]
