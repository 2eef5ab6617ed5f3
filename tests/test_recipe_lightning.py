"""The default recipe in Lightning: LaplaceWarmStart, WhitenedAdam, the lr schedule, PosteriorAveraging."""

from __future__ import annotations

import pytest
import torch
from helpers import short_trainer
from lightning.pytorch.callbacks import EarlyStopping
from test_svi_run import ill_conditioned

from quivers.datasets import TensorDataModule
from quivers.errors import ConfigError
from quivers.guides import AutoMultivariateNormal, AutoStructured
from quivers.infer import Trace_ELBO, WhitenedAdam
from quivers.lightning import LaplaceWarmStart, PosteriorAveraging, SVIModule


def recipe_fit(tmp_path, steps: int = 1200, **kwargs):
    torch.manual_seed(0)
    model, batch, mean, cov = ill_conditioned()
    dm = TensorDataModule(batch, steps_per_epoch=100)
    guide = AutoMultivariateNormal(model)
    module = SVIModule(model, guide, Trace_ELBO(num_particles=16), lr=0.03, final_lr_frac=0.01)
    warm = LaplaceWarmStart()
    trainer = short_trainer(tmp_path, steps, callbacks=[warm, PosteriorAveraging(), *kwargs.get("extra", [])])
    trainer.fit(module, datamodule=dm)
    return module, guide, batch, mean, cov, warm, trainer


def test_lightning_recipe_fits_the_ill_conditioned_regression(tmp_path):
    """Same closed form as the SVI.run test; the Lightning recipe whitens only the location
    (Adam's moments must survive checkpoints), so 0.1 sd and 10% are asked (1200 steps)."""
    module, guide, batch, mean, cov, warm, trainer = recipe_fit(tmp_path)
    assert warm.result is not None and warm.result.converged
    opt = trainer.optimizers[0]
    assert isinstance(opt, WhitenedAdam)
    whitened = [g for g in opt.param_groups if g["whiten"] is not None]
    assert len(whitened) == 1 and whitened[0]["params"][0] is guide.loc
    z = guide.sample_posterior(batch, (10_000,))
    draws = torch.stack([z["a"], z["b"]], -1).double()
    sd = cov.diagonal().sqrt()
    assert ((draws.mean(0) - mean).abs() / sd).max() < 0.1
    assert ((draws.std(0) / sd) - 1).abs().max() < 0.1
    # the schedule ended at 1% of the learning rate
    assert abs(opt.param_groups[0]["lr"] / 0.03 - 0.01) < 1e-3


def test_lightning_recipe_resumes_with_the_whitening(tmp_path):
    """A checkpoint holds WhitenedAdam's groups with their whitening; a resumed fit gets them
    and the parameters back from the checkpoint, whatever its own warm start found."""
    module, guide, batch, *_, trainer = recipe_fit(tmp_path, steps=200)
    ckpt = tmp_path / "mid.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = [g["whiten"] for g in trainer.optimizers[0].param_groups]
    model2, batch2, _, _ = ill_conditioned()
    guide2 = AutoMultivariateNormal(model2)
    module2 = SVIModule(model2, guide2, Trace_ELBO(num_particles=16), lr=0.03, final_lr_frac=0.01)
    warm = LaplaceWarmStart()
    t2 = short_trainer(tmp_path, 300, callbacks=[warm, PosteriorAveraging()])
    t2.fit(module2, datamodule=TensorDataModule(batch2, steps_per_epoch=100), ckpt_path=ckpt, weights_only=True)
    got = [g["whiten"] for g in t2.optimizers[0].param_groups]
    assert len(got) == len(saved)
    for a, b in zip(got, saved, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


def test_early_stopping_on_the_elbo_stops_after_min_steps(tmp_path):
    """EarlyStopping on train/elbo with patience 0 stops at the first epoch without a new best
    after min_steps (a flat ELBO after the warm start)."""
    stop = EarlyStopping(monitor="train/elbo", mode="max", patience=0, check_on_train_epoch_end=True)
    *_, trainer = recipe_fit(tmp_path, steps=3000, extra=[stop])
    assert trainer.global_step < 3000


def test_warm_start_callback_skips_guides_without_a_gaussian(tmp_path):
    model, batch, _, _ = ill_conditioned()
    guide = AutoStructured(model, conditionals={"a": "normal", "b": "normal"})
    module = SVIModule(model, guide, lr=0.01)
    with pytest.warns(UserWarning, match="no Gaussian"):
        short_trainer(tmp_path, 3, callbacks=[LaplaceWarmStart()]).fit(module, datamodule=TensorDataModule(batch))


def test_recipe_argument_checks():
    model, _, _, _ = ill_conditioned()
    with pytest.raises(ConfigError, match="final_lr_frac"):
        SVIModule(model, AutoMultivariateNormal(model), final_lr_frac=0.0)
    with pytest.raises(ConfigError, match="decay_start"):
        SVIModule(model, AutoMultivariateNormal(model), decay_start=1.0)
    with pytest.raises(ConfigError, match="start_fraction"):
        PosteriorAveraging(start_fraction=1.5)
