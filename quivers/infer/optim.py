"""Checks of optimizer settings, made before an optimizer is built or stepped."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from ..errors import ConfigError

__all__ = ["check_learning_rate", "check_optimizer"]


def check_learning_rate(lr: Any, where: str) -> float:
    """``lr`` as a float, checked.

    Parameters
    ----------
    lr : float
        A learning rate (a plain number or a 0-d tensor).
    where : str
        What it configures, for the message.

    Raises
    ------
    ConfigError
        If ``lr`` is not a finite number greater than zero: an infinite or NaN rate makes
        every parameter non-finite in one step, a zero or negative one never fits.
    """
    if isinstance(lr, torch.Tensor) and lr.numel() == 1:
        lr = lr.item()
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"{where}: the learning rate must be a finite number > 0, got {lr!r}")
    return float(lr)


def check_optimizer(optimizer: torch.optim.Optimizer, where: str) -> None:
    """Check every parameter group's learning rate (a scheduler or the user may have
    changed it since the optimizer was built).

    Raises
    ------
    ConfigError
        Naming the group, if a group's ``lr`` is not a finite number > 0.
    """
    groups: Iterable[dict] = getattr(optimizer, "param_groups", ())
    for i, group in enumerate(groups):
        if "lr" in group:
            check_learning_rate(group["lr"], f"{where}: parameter group {i}")
