"""The default fit recipe as Lightning callbacks: a Laplace warm start when the fit starts,
and parameter averaging (Lightning's ``WeightAveraging``) over the last part of the steps.

The rest of the recipe is ``SVIModule``'s: its default optimizer
(:class:`~quivers.infer.WhitenedAdam`) takes the location steps in the warm start's
whitened coordinates, ``final_lr_frac`` decays the learning rate, and Lightning's
``EarlyStopping`` on ``train/elbo`` ends the fit once the ELBO stops improving.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import WeightAveraging

from ..datasets import TensorDataModule
from ..errors import ConfigError, GuideError
from ..guides.warm_start import laplace_warm_start

__all__ = ["LaplaceWarmStart", "PosteriorAveraging"]


class LaplaceWarmStart(L.Callback):
    """Start the guide at the Laplace approximation before the first step
    (:func:`~quivers.guides.laplace_warm_start` on the data module's full training batch:
    float64 Newton or L-BFGS, seeded restarts), and give ``SVIModule`` the Laplace scales
    to whiten its location steps with (used by its default optimizer,
    :class:`~quivers.infer.WhitenedAdam`; Adam's moments then live in whitened
    coordinates, stored with the whitening in the optimizer's checkpointed state, while
    the guide's parameters stay in the model's).

    When a fit resumes from a checkpoint, Lightning restores the parameters and the
    optimizer's state (its whitening included) after this callback ran, so the
    checkpoint's win. Guides without a Gaussian (structured, custom) are left alone with a
    warning. Every rank runs the same deterministic search, so no communication is needed
    under DDP.

    Parameters
    ----------
    num_restarts : int
        Further searches from random points (see :func:`~quivers.guides.laplace_warm_start`).
    whiten : bool
        Hand the Laplace scales to the optimizer.

    Raises
    ------
    ConfigError
        If the data module is not a :class:`~quivers.datasets.TensorDataModule` (the warm
        start needs the whole training batch).
    """

    def __init__(self, num_restarts: int = 2, whiten: bool = True) -> None:
        self.num_restarts = int(num_restarts)
        self.whiten = bool(whiten)
        self.result = None

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        dm = trainer.datamodule
        if not isinstance(dm, TensorDataModule):
            raise ConfigError("LaplaceWarmStart needs a TensorDataModule (it fits the mode on the whole training "
                              f"batch), got {type(dm).__name__}")
        guide = pl_module.guide
        if getattr(guide, "_set_moments", None) is None:
            warnings.warn(f"LaplaceWarmStart: {type(guide).__name__} has no Gaussian to set; no warm start",
                          stacklevel=2)
            return
        batch = {k: v.to(next(guide.parameters()).device) for k, v in dm.full_batch().items()}
        try:
            self.result = laplace_warm_start(guide, batch, num_restarts=self.num_restarts)
        except GuideError as e:
            warnings.warn(f"LaplaceWarmStart: no warm start ({e})", stacklevel=2)
            return
        loc_whitening = getattr(guide, "_loc_whitening", None)
        if self.whiten and self.result.converged and loc_whitening is not None:
            pl_module.whitening = loc_whitening(self.result.cov)


class PosteriorAveraging(WeightAveraging):
    """Lightning's ``WeightAveraging`` (``torch.optim.swa_utils.AveragedModel``, equal
    weights: Polyak & Juditsky 1992) from step ``start_fraction`` times the fit's steps
    (``trainer.estimated_stepping_batches``) on;
    at the end of the fit the guide holds the average, and checkpoints hold it too (as
    ``WeightAveraging`` does).

    Parameters
    ----------
    start_fraction : float
        Where averaging starts, as a fraction of ``trainer.max_steps`` (default 0.5, where
        ``SVIModule``'s learning-rate decay starts by default).

    Raises
    ------
    ConfigError
        If ``start_fraction`` is not in [0, 1), or the trainer has neither ``max_steps``
        nor ``max_epochs``.
    """

    def __init__(self, start_fraction: float = 0.5) -> None:
        super().__init__(use_buffers=False)
        if not 0 <= start_fraction < 1:
            raise ConfigError(f"PosteriorAveraging: start_fraction must be in [0, 1), got {start_fraction!r}")
        self.start_fraction = float(start_fraction)
        self._trainer: L.Trainer | None = None
        self._start: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        self._trainer = trainer
        self._start = None
        super().setup(trainer, pl_module, stage)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is None:
            return False
        if self._start is None:
            total = self._trainer.estimated_stepping_batches if self._trainer is not None else math.inf
            if not math.isfinite(total):
                raise ConfigError("PosteriorAveraging: set the trainer's max_steps or max_epochs")
            self._start = int(self.start_fraction * total)
        return step_idx >= self._start
