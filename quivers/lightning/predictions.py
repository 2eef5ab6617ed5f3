"""``GatherPredictions``: posterior predictive draws of every row, across devices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

__all__ = ["GatherPredictions"]


class GatherPredictions(BasePredictionWriter):
    """Collect ``SVIModule.predict_step`` outputs of all devices into one dict, in row order.

    Under a multi-device strategy each rank predicts its share of the rows (Lightning's
    ``DistributedSampler``, which repeats rows to even the shares out). At the end of
    ``trainer.predict`` every rank sends its outputs and their rows' positions (Lightning's
    ``batch_indices``) to rank 0 (``torch.distributed.all_gather_object``), which joins
    them with :meth:`SVIModule.merge_predictions`: each row once, in data set order. On
    one device this is that method applied to the predictions.

    Attributes
    ----------
    predictions : dict of str to torch.Tensor or None
        On rank 0 after ``trainer.predict``: ``{site: (num_predict_samples,) + site
        shape}`` on the CPU; ``None`` on other ranks and before prediction.

    Examples
    --------
    >>> gather = GatherPredictions()
    >>> L.Trainer(devices=2, strategy="ddp", callbacks=[gather]).predict(module, data)
    >>> gather.predictions["y"].shape  # (num_predict_samples, num_rows) on rank 0
    """

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")
        self.predictions: dict[str, torch.Tensor] | None = None

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Sequence[Any],
                           batch_indices: Sequence[Any]) -> None:
        if predictions and isinstance(predictions[0], list):  # several dataloaders: the first one
            predictions = predictions[0]
        if batch_indices and batch_indices[0] and isinstance(batch_indices[0][0], list):  # per dataloader
            batch_indices = batch_indices[0]
        local = ([{k: v.cpu() for k, v in p.items()} for p in predictions], [list(b) for b in batch_indices])
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            shares: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(shares, local)
        else:
            shares = [local]
        if not trainer.is_global_zero:
            return
        outputs = [o for share in shares for o in share[0]]
        indices = [b for share in shares for b in share[1]]
        if outputs:
            complete = len(indices) == len(outputs) and all(len(b) for b in indices)
            self.predictions = pl_module.merge_predictions(outputs, indices if complete else None)
