"""``TensorDataModule``: dict batches of rows from in-memory tensors."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from ..errors import BatchError, ConfigError
from ..validation import check_positive_int

__all__ = ["RowDataset", "TensorDataModule"]


class RowDataset(Dataset):
    """Rows of a dict of equally long tensors (``rows`` selects and orders them); each
    item also carries its position in this dataset under ``index_key`` (the data plate's
    name), so batches hold subsample indices into the plate of these rows."""

    def __init__(self, fields: Mapping[str, torch.Tensor], index_key: str | None = None,
                 rows: torch.Tensor | None = None) -> None:
        lengths = _row_counts(fields)
        self.fields = dict(fields)
        self.index_key = index_key
        n = next(iter(lengths.values()))
        self.rows = torch.arange(n) if rows is None else rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        r = self.rows[i]
        item = {k: v[r] for k, v in self.fields.items()}
        if self.index_key is not None:
            item[self.index_key] = torch.as_tensor(i)
        return item


def _row_counts(fields: Mapping[str, Any]) -> dict[str, int]:
    """Rows (leading dim) of each field, checked: at least one field, each a tensor with a
    row dim, all equally long, at least one row.

    Raises
    ------
    BatchError
        Naming the field at fault.
    """
    if not isinstance(fields, Mapping) or not fields:
        raise BatchError("a data module needs a non-empty mapping of field name -> tensor")
    lengths = {}
    for k, v in fields.items():
        if not isinstance(v, torch.Tensor):
            raise BatchError(f"data field {k!r}: expected a tensor, got {type(v).__name__}")
        if v.dim() == 0:
            raise BatchError(
                f"data field {k!r} is 0-d; fields hold one row per element of the data plate along dim 0 "
                "(a constant belongs in the model, e.g. as a buffer or a step's default)"
            )
        lengths[k] = len(v)
    if len(set(lengths.values())) != 1:
        raise BatchError(f"data fields must have the same number of rows, got {lengths}")
    if not next(iter(lengths.values())):
        raise BatchError(f"the data module is empty: its fields have 0 rows ({lengths})")
    return lengths


class _RepeatedBatch(Dataset):
    """One batch, ``n`` times."""

    def __init__(self, batch: dict[str, torch.Tensor], n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batch


class TensorDataModule(L.LightningDataModule):
    """A ``LightningDataModule`` over in-memory tensors, yielding dict batches.

    Batches are ``{field: tensor}`` with rows along the leading dimension, plus the rows'
    indices under the plate's name (``batch[plate]``, a ``LongTensor``) where a batch
    holds only some of the rows, so guides select the matching local latents and the
    model scales the batch by ``N / rows``. The full training set is one batch by default.

    Shuffled minibatches come from torchdata's ``StatefulDataLoader``, whose position and
    shuffling state Lightning saves in checkpoints: a fit resumed from a mid-epoch
    checkpoint sees the same batches as the uninterrupted fit.

    Parameters
    ----------
    fields : mapping of str to tensor
        Equally long tensors (at least one row, rows along dim 0): observed values and
        program inputs.
    plate : str
        Name of the model's data plate; its global size is :attr:`num_data`.
    batch_size : int, optional
        Rows per batch (``None``: the full training set in one batch).
    val_fraction : float
        Fraction of rows held out for validation (default 0: no validation set).
    with_indices : bool, optional
        Put the row indices in each training and prediction batch under ``plate``.
        ``None`` (default): whenever a batch holds only some of the rows (minibatches,
        or rows split across devices) and the model being fitted has the plate.
    seed : int
        Seed of the train/validation split.
    steps_per_epoch : int
        With ``batch_size=None``, yield the full batch this many times per epoch (an
        "epoch" of one step is too short for progress bars and epoch logs); across
        several devices each rank gets the full batch for its share of the steps.

    Attributes
    ----------
    num_data : int
        Number of training rows: the global size of the data plate.

    Raises
    ------
    BatchError
        If ``fields`` is empty, a field is not a tensor or is 0-d, the fields' row
        counts differ, or they have no rows.
    ConfigError
        If ``batch_size`` or ``steps_per_epoch`` is not a positive int, or
        ``val_fraction`` is not in ``[0, 1)`` or leaves no training row.
    """

    def __init__(
        self,
        fields: Mapping[str, torch.Tensor],
        plate: str = "data",
        batch_size: int | None = None,
        val_fraction: float = 0.0,
        with_indices: bool | None = None,
        seed: int = 0,
        steps_per_epoch: int = 1,
    ) -> None:
        super().__init__()
        fields = {k: torch.as_tensor(v) for k, v in fields.items()} if isinstance(fields, Mapping) else fields
        n = next(iter(_row_counts(fields).values()))
        self.steps_per_epoch = check_positive_int(steps_per_epoch, "steps_per_epoch", ConfigError)
        if batch_size is not None:
            batch_size = check_positive_int(batch_size, "batch_size", ConfigError)
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real) \
                or not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"val_fraction must lie in [0, 1), got {val_fraction!r}")
        n_val = int(round(val_fraction * n))
        if n_val >= n:
            raise ConfigError(f"val_fraction={val_fraction} holds out all {n} rows; no training row is left")
        self.fields = fields
        self.plate = plate
        self.batch_size = batch_size
        self.with_indices = with_indices
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        self.val_rows = perm[:n_val].sort().values
        self.train_rows = perm[n_val:].sort().values if n_val else torch.arange(n)

    @property
    def num_data(self) -> int:
        """Global number of training rows (the data plate's size)."""
        return len(self.train_rows)

    def _indices(self, rows: torch.Tensor) -> bool:
        """Whether batches of ``rows`` carry their indices under the plate's name."""
        if self.with_indices is not None:
            return self.with_indices
        trainer = self.trainer
        model = getattr(getattr(trainer, "lightning_module", None), "model", None)
        if trainer is None or self.plate not in getattr(model, "plates", {}):
            return False
        split = self.batch_size is not None and self.batch_size < len(rows)
        return split or trainer.world_size > 1

    def _loader(self, rows: torch.Tensor, shuffle: bool, indices: bool) -> DataLoader:
        ds = RowDataset(self.fields, self.plate if indices else None, rows)
        bs = self.batch_size or len(rows)
        if shuffle and bs < len(rows):
            return StatefulDataLoader(ds, batch_size=bs, shuffle=True)
        return DataLoader(ds, batch_size=bs, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        if self.batch_size is None and self.steps_per_epoch > 1:
            return DataLoader(_RepeatedBatch(self.full_batch(), self.steps_per_epoch), batch_size=None)
        return self._loader(self.train_rows, True, self._indices(self.train_rows))

    def val_dataloader(self) -> DataLoader:
        # held-out rows are not rows of the training plate: their positions are not plate indices
        return self._loader(self.val_rows, False, bool(self.with_indices)) if len(self.val_rows) else []

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.train_rows, False, self._indices(self.train_rows))

    def full_batch(self) -> dict[str, torch.Tensor]:
        """Every training row in one dict batch (with indices when ``with_indices``)."""
        batch = {k: v[self.train_rows] for k, v in self.fields.items()}
        if self.with_indices:
            batch[self.plate] = torch.arange(len(self.train_rows))
        return batch
