"""Simulated data sets with the truth known: grouped data for varying-intercept models, a
hidden Markov chain with Gaussian emissions, counts with a change point."""

from __future__ import annotations

import torch

from .base import TensorDataModule

__all__ = ["simulate_varying_intercepts", "VaryingInterceptsData", "simulate_hmm", "HMMData", "simulate_changepoint",
           "ChangePointData"]


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


def simulate_hmm(num_steps: int, seed: int = 0, trans: torch.Tensor | None = None,
                 locs: torch.Tensor | None = None, scale: float = 0.7) -> dict[str, torch.Tensor]:
    """Draw a chain ``z_t`` (``z_0`` uniform) with transition matrix ``trans`` and
    ``y_t ~ N(locs[z_t], scale)``.

    The defaults are three states with ``locs = (-2, 0, 2)`` and
    ``trans = [[.90, .07, .03], [.10, .80, .10], [.05, .15, .80]]``.

    Returns
    -------
    dict
        ``y`` (num_steps,), and the truth: ``z`` (num_steps,) int64, ``trans``, ``locs``,
        ``scale``.
    """
    trans = trans if trans is not None else torch.tensor([[0.90, 0.07, 0.03], [0.10, 0.80, 0.10], [0.05, 0.15, 0.80]])
    locs = locs if locs is not None else torch.tensor([-2.0, 0.0, 2.0])
    g = torch.Generator().manual_seed(seed)
    k = trans.shape[0]
    z = [int(torch.randint(0, k, (), generator=g))]
    for _ in range(num_steps - 1):
        z.append(int(torch.multinomial(trans[z[-1]], 1, generator=g)))
    states = torch.tensor(z)
    y = locs[states] + scale * torch.randn(num_steps, generator=g)
    dtype = torch.get_default_dtype()
    return {"y": y.to(dtype), "z": states, "trans": trans.to(dtype), "locs": locs.to(dtype),
            "scale": torch.tensor(scale, dtype=dtype)}


class HMMData(TensorDataModule):
    """One simulated chain (see :func:`simulate_hmm`), plate ``time``, the whole series in
    each batch (a Markov chain needs every step); the truth is kept as attributes
    ``true_z``, ``true_trans``, ``true_locs``, ``true_scale``."""

    def __init__(self, num_steps: int = 1000, seed: int = 0, steps_per_epoch: int = 1) -> None:
        d = simulate_hmm(num_steps, seed)
        self.true_z, self.true_trans, self.true_locs, self.true_scale = d["z"], d["trans"], d["locs"], d["scale"]
        super().__init__({"y": d["y"]}, "time", None, seed=seed, steps_per_epoch=steps_per_epoch)


def simulate_changepoint(num_steps: int = 100, tau: int = 40, early: float = 3.0, late: float = 1.0,
                         seed: int = 0) -> dict[str, torch.Tensor]:
    """Poisson counts at rate ``early`` before step ``tau`` and ``late`` from it on.

    Returns
    -------
    dict
        ``y`` (num_steps,) and the truth ``tau``, ``early``, ``late``.
    """
    g = torch.Generator().manual_seed(seed)
    rate = torch.where(torch.arange(num_steps) < tau, torch.tensor(early), torch.tensor(late))
    y = torch.poisson(rate, generator=g).to(torch.get_default_dtype())
    return {"y": y, "tau": torch.tensor(tau), "early": torch.tensor(early), "late": torch.tensor(late)}


class ChangePointData(TensorDataModule):
    """Simulated counts with one change point (see :func:`simulate_changepoint`), plate
    ``time``; the truth is kept as ``true_tau``, ``true_early``, ``true_late``."""

    def __init__(self, num_steps: int = 100, tau: int = 40, early: float = 3.0, late: float = 1.0, seed: int = 0,
                 steps_per_epoch: int = 1) -> None:
        d = simulate_changepoint(num_steps, tau, early, late, seed)
        self.true_tau, self.true_early, self.true_late = d["tau"], d["early"], d["late"]
        super().__init__({"y": d["y"]}, "time", None, seed=seed, steps_per_epoch=steps_per_epoch)
