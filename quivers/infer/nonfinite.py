"""Detecting and diagnosing non-finite losses and gradients (used by ``SVI`` and ``SVIModule``)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ..errors import ConfigError, NonFiniteLossError
from ..guides.guide import Guide
from ..program import MonadicProgram

__all__ = ["NON_FINITE_POLICIES", "check_policy", "step_is_finite", "nonfinite_sites", "nonfinite_error",
           "SkippedSteps"]

NON_FINITE_POLICIES = ("raise", "skip")


def check_policy(on_nonfinite: str) -> str:
    """Validate an ``on_nonfinite`` argument.

    Raises
    ------
    ConfigError
        If it is not ``"raise"`` or ``"skip"``.
    """
    if on_nonfinite not in NON_FINITE_POLICIES:
        raise ConfigError(f"on_nonfinite must be one of {NON_FINITE_POLICIES}, got {on_nonfinite!r}")
    return on_nonfinite


class SkippedSteps:
    """Counts the steps ``on_nonfinite="skip"`` dropped, and warns once per run of
    ``patience`` consecutive ones: a fit that skips step after step is not progressing.

    Attributes
    ----------
    total : int
        Steps skipped so far.
    """

    def __init__(self, patience: int = 10) -> None:
        self.total = 0
        self.patience = int(patience)
        self._run = 0

    def skipped(self, step: int) -> None:
        """Count a skipped step (``step``: its number, for the warning)."""
        self.total += 1
        self._run += 1
        if self._run == self.patience:
            warnings.warn(
                f"step {step}: the last {self.patience} steps were all skipped for a non-finite loss or gradient "
                f"({self.total} skipped so far); the fit is not progressing: lower the learning rate, check the "
                "model's sites and data, or use on_nonfinite='raise' to see which site fails", RuntimeWarning,
                stacklevel=3)

    def applied(self) -> None:
        """A step was applied: the run of skipped steps ends."""
        self._run = 0


def step_is_finite(loss: torch.Tensor, params: Iterable[torch.Tensor]) -> bool:
    """Whether the loss and every gradient are finite (one concatenation, one device sync:
    about a third of the cost of a check per tensor on a small model's step)."""
    flat = [loss.reshape(-1)] + [p.grad.reshape(-1) for p in params if p.grad is not None]
    return bool(torch.isfinite(torch.cat(flat)).all())


@torch.no_grad()
def nonfinite_sites(model: MonadicProgram, guide: Guide, batch: Mapping[str, Any] | None,
                    num_samples: int = 16) -> list[str]:
    """Sites whose log-density is non-finite at any of ``num_samples`` fresh guide draws.

    ``"<guide>"`` stands for the guide's own log-density. Model sites come first, in
    declaration order.
    """
    prepared = model.prepare(batch)
    ss = torch.Size((num_samples,))
    z, log_q = guide.rsample_and_log_prob(prepared, ss)
    sites = model.trace(prepared, z, ss).nonfinite_sites()
    if not bool(torch.isfinite(log_q).all()):
        sites.append("<guide>")
    return sites


def nonfinite_error(model: MonadicProgram, guide: Guide, batch: Mapping[str, Any] | None, loss: float,
                    step: int) -> NonFiniteLossError:
    """The error for a non-finite step, with the offending sites diagnosed."""
    try:
        sites = nonfinite_sites(model, guide, batch)
    except Exception:  # noqa: BLE001 - a diagnosis that fails must not hide the original problem
        sites = []
    what = f"loss {loss}" if not torch.isfinite(torch.tensor(loss)) else "a non-finite gradient"
    where = (f"non-finite log-density at site(s) {sites}" if sites else
             "no site's log-density was non-finite at 16 fresh draws (the gradient overflowed, or the value "
             "depends on the draw)")
    return NonFiniteLossError(
        f"step {step}: {what}; {where}. The step was not applied (parameters unchanged). Check those sites' "
        "parameters and data, lower the learning rate, or pass on_nonfinite='skip' to skip such steps",
        sites)
