"""Varying-intercepts regression: group-level latents, fitted on minibatches of rows."""

from __future__ import annotations

import torch
from torch import distributions as dist

from ..program import Latent, MonadicProgram, Observed, Plate

__all__ = ["VaryingIntercepts"]


class VaryingIntercepts(MonadicProgram):
    """``mu_a ~ N(0, 5)``, ``sigma_a ~ HalfNormal(2.5)``, ``a_g ~ N(mu_a, sigma_a)`` for each
    group, ``b ~ N(0, 5)``, ``sigma_y ~ HalfNormal(2.5)``,
    ``y_i ~ N(a[group_i] + b x_i, sigma_y)`` (Gelman & Hill 2007, ch. 12).

    The group intercepts ``a`` are local latents (plate ``groups``); rows live in plate
    ``data``, which is subsampled (``subsample_size``) or minibatched by the data module,
    with the likelihood scaled by ``num_data / batch rows``. Both plates own dim -1 (they
    are siblings, never nested).

    Batch fields: ``x`` (N,), ``group`` (N,) int64 in ``[0, num_groups)``, ``y`` (N,).

    Parameters
    ----------
    num_groups : int
        Number of groups.
    num_data : int, optional
        Global number of rows (set by ``SVIModule`` from the data module when omitted).
    subsample_size : int, optional
        Rows drawn per step when the full data set is passed as the batch.
    """

    def __init__(self, num_groups: int, num_data: int | None = None, subsample_size: int | None = None) -> None:
        super().__init__()
        groups = Plate("groups", size=num_groups, dim=-1)
        data = Plate("data", size=num_data, subsample_size=subsample_size, dim=-1)
        self.register_buffer("zero", torch.tensor(0.0))  # prior constants follow the model's device and dtype
        self.register_buffer("five", torch.tensor(5.0))
        self.register_buffer("half_scale", torch.tensor(2.5))
        self.declare(
            Latent("mu_a", lambda: dist.Normal(self.zero, self.five)),
            Latent("sigma_a", lambda: dist.HalfNormal(self.half_scale)),
            Latent("a", lambda mu_a, sigma_a: dist.Normal(mu_a, sigma_a), plate=groups),
            Latent("b", lambda: dist.Normal(self.zero, self.five)),
            Latent("sigma_y", lambda: dist.HalfNormal(self.half_scale)),
            Observed(
                "y", lambda a, b, sigma_y, x, group: dist.Normal(a[..., group] + b * x, sigma_y), plate=data,
            ),
        )
