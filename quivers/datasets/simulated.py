"""Simulated grouped data for varying-intercept models (truth known)."""

from __future__ import annotations

import torch

from .base import TensorDataModule

__all__ = ["simulate_varying_intercepts", "VaryingInterceptsData"]


def simulate_varying_intercepts(
    num_rows: int, num_groups: int, seed: int = 0,
    mu_a: float = 1.0, sigma_a: float = 0.5, b: float = -0.7, sigma_y: float = 0.8,
) -> dict[str, torch.Tensor]:
    """Draw ``y_i = a[group_i] + b x_i + eps_i`` with ``a_g ~ N(mu_a, sigma_a)``,
    ``x_i ~ N(0, 1)``, ``eps_i ~ N(0, sigma_y)`` and groups assigned uniformly.

    Returns
    -------
    dict
        ``x`` (num_rows,), ``group`` (num_rows,) int64, ``y`` (num_rows,), and the truth
        ``a`` (num_groups,) under ``"true_a"``.
    """
    g = torch.Generator().manual_seed(seed)
    a = mu_a + sigma_a * torch.randn(num_groups, generator=g)
    group = torch.randint(0, num_groups, (num_rows,), generator=g)
    x = torch.randn(num_rows, generator=g)
    y = a[group] + b * x + sigma_y * torch.randn(num_rows, generator=g)
    return {"x": x, "group": group, "y": y, "true_a": a}


class VaryingInterceptsData(TensorDataModule):
    """Simulated varying-intercepts data (see :func:`simulate_varying_intercepts`),
    plate ``data``, minibatches of ``batch_size`` rows."""

    def __init__(self, num_rows: int = 20000, num_groups: int = 100, batch_size: int | None = 512,
                 seed: int = 0) -> None:
        d = simulate_varying_intercepts(num_rows, num_groups, seed)
        self.true_a = d.pop("true_a")
        super().__init__(d, "data", batch_size, seed=seed)
