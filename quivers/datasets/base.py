"""``TensorDataModule``: dict batches of rows from in-memory tensors."""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import BatchError

__all__ = ["RowDataset", "TensorDataModule"]


class RowDataset(Dataset):
    """Rows of a dict of equally long tensors (``rows`` selects and orders them); each
    item also carries its position in this dataset under ``index_key`` (the data plate's
    name), so batches hold subsample indices into the plate of these rows."""

    def __init__(self, fields: Mapping[str, torch.Tensor], index_key: str | None = None,
                 rows: torch.Tensor | None = None) -> None:
        lengths = {k: len(v) for k, v in fields.items()}
        if len(set(lengths.values())) != 1:
            raise BatchError(f"fields must have the same number of rows, got {lengths}")
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
    indices under the plate's name (``batch[plate]``, a ``LongTensor``) when
    ``with_indices`` is set, so guides can select local latents. The full training set
    is one batch by default.

    Parameters
    ----------
    fields : mapping of str to tensor
        Equally long tensors: observed values and program inputs.
    plate : str
        Name of the model's data plate; its global size is :attr:`num_data`.
    batch_size : int, optional
        Rows per batch (``None``: the full training set in one batch).
    val_fraction : float
        Fraction of rows held out for validation (default 0: no validation set).
    with_indices : bool
        Put the row indices in each batch under ``plate`` (needed for local latents
        in the data plate).
    seed : int
        Seed of the train/validation split.
    steps_per_epoch : int
        With ``batch_size=None`` on one device, yield the full batch this many times
        per epoch (an "epoch" of one step is too short for progress bars and epoch
        logs). Leave at 1 for multi-device training, where the rows are split across
        ranks.

    Attributes
    ----------
    num_data : int
        Number of training rows: the global size of the data plate.
    """

    def __init__(
        self,
        fields: Mapping[str, torch.Tensor],
        plate: str = "data",
        batch_size: int | None = None,
        val_fraction: float = 0.0,
        with_indices: bool = False,
        seed: int = 0,
        steps_per_epoch: int = 1,
    ) -> None:
        super().__init__()
        if steps_per_epoch < 1:
            raise BatchError(f"steps_per_epoch must be a positive int, got {steps_per_epoch}")
        self.steps_per_epoch = int(steps_per_epoch)
        if not 0.0 <= val_fraction < 1.0:
            raise BatchError(f"val_fraction must lie in [0, 1), got {val_fraction}")
        self.fields = {k: torch.as_tensor(v) for k, v in fields.items()}
        self.plate = plate
        self.batch_size = batch_size
        self.with_indices = with_indices
        n = len(next(iter(self.fields.values())))
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        n_val = int(round(val_fraction * n))
        self.val_rows = perm[:n_val].sort().values
        self.train_rows = perm[n_val:].sort().values if n_val else torch.arange(n)
        if batch_size is not None and batch_size < 1:
            raise BatchError(f"batch_size must be a positive int or None, got {batch_size}")

    @property
    def num_data(self) -> int:
        """Global number of training rows (the data plate's size)."""
        return len(self.train_rows)

    def _loader(self, rows: torch.Tensor, shuffle: bool) -> DataLoader:
        ds = RowDataset(self.fields, self.plate if self.with_indices else None, rows)
        bs = self.batch_size or len(rows)
        return DataLoader(ds, batch_size=bs, shuffle=shuffle and bs < len(rows))

    def train_dataloader(self) -> DataLoader:
        if self.batch_size is None and self.steps_per_epoch > 1:
            return DataLoader(_RepeatedBatch(self.full_batch(), self.steps_per_epoch), batch_size=None)
        return self._loader(self.train_rows, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_rows, shuffle=False) if len(self.val_rows) else []

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.train_rows, shuffle=False)

    def full_batch(self) -> dict[str, torch.Tensor]:
        """Every training row in one dict batch (with indices when ``with_indices``)."""
        batch = {k: v[self.train_rows] for k, v in self.fields.items()}
        if self.with_indices:
            batch[self.plate] = torch.arange(len(self.train_rows))
        return batch
