"""TensorDataModule: row indices where batches hold some of the rows, checks of its fields,
and the merge of predictions by row position."""

import lightning as L
import pytest
import torch

from quivers.datasets import TensorDataModule
from quivers.guides import AutoNormalGuide
from quivers.lightning import GatherPredictions, SVIModule
from quivers.models import BayesianLinearRegression


def _module():
    model = BayesianLinearRegression(2)
    return SVIModule(model, AutoNormalGuide(model), num_predict_samples=5)


def _attached(dm, module=None):
    trainer = L.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)
    trainer.strategy.connect(module or _module())
    dm.trainer = trainer
    return dm


@pytest.mark.parametrize("batch_size, with_indices, expected", [
    (4, None, True), (None, None, False), (4, False, False), (None, True, True),
], ids=["minibatches", "full-batch", "forced-off", "forced-on"])
def test_batches_carry_row_indices_when_they_hold_some_of_the_rows(batch_size, with_indices, expected):
    x, y = torch.randn(10, 2), torch.randn(10)
    dm = _attached(TensorDataModule({"x": x, "y": y}, batch_size=batch_size, with_indices=with_indices))
    seen = []
    for batch in dm.train_dataloader():
        assert ("data" in batch) is expected
        if expected:
            assert torch.equal(batch["y"], y[batch["data"]])  # the indices are the rows' positions
            seen.append(batch["data"])
    if expected:
        assert torch.equal(torch.cat(seen).sort().values, torch.arange(10))


def test_a_plate_the_model_lacks_gets_no_indices():
    dm = _attached(TensorDataModule({"x": torch.randn(10, 2), "y": torch.randn(10)}, plate="rows", batch_size=4))
    assert all("rows" not in b for b in dm.train_dataloader())


def test_merge_predictions_puts_rows_in_order_once():
    """As a DistributedSampler over 5 rows on 2 ranks gives them: rank 0 rows [0, 2, 4],
    rank 1 rows [1, 3, 0] (row 0 repeated to even the shares)."""
    module = _module()
    y = torch.arange(5.0)
    outputs = [{"y": y[[0, 2, 4]].expand(3, 3), "w": torch.zeros(3, 2)},
               {"y": y[[1, 3, 0]].expand(3, 3), "w": torch.ones(3, 2)}]
    merged = module.merge_predictions(outputs, [[0, 2, 4], [1, 3, 0]])
    assert torch.equal(merged["y"], y.expand(3, 5))
    assert torch.equal(merged["w"], torch.zeros(3, 2))  # a global site: the first output's


def test_gather_predictions_on_one_device_joins_minibatches_in_order(tmp_path):
    x, y = torch.randn(10, 2), torch.arange(10.0)
    module, gather = _module(), GatherPredictions()
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[gather],
                        default_root_dir=tmp_path)
    trainer.predict(module, TensorDataModule({"x": x, "y": y}, batch_size=3))
    assert gather.predictions["y"].shape == (5, 10)
    assert gather.predictions["w"].shape == (5, 2)
