"""Checkpoints: reload with no arguments in a fresh process; exact resume."""

import subprocess
import sys
import textwrap

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from quivers.datasets import EightSchoolsData, TensorDataModule
from quivers.guides import AutoDeltaGuide, AutoNormalGuide, init_to_median
from quivers.infer import Trace_ELBO
from quivers.lightning import SVIModule
from quivers.models import BayesianLinearRegression, EightSchools


def _trainer(tmp_path, steps, **kw):
    return L.Trainer(max_steps=steps, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, accelerator="cpu", **kw)


def _fit(tmp_path, steps, guide_cls=AutoNormalGuide, **guide_kw):
    L.seed_everything(0)
    model = EightSchools()
    module = SVIModule(model, guide_cls(model, **guide_kw), elbo=Trace_ELBO(num_particles=2), lr=0.02)
    trainer = _trainer(tmp_path, steps)
    trainer.fit(module, EightSchoolsData())
    return module, trainer


@pytest.mark.parametrize("guide_cls", [AutoNormalGuide, AutoDeltaGuide])
def test_checkpoint_round_trip_in_fresh_process(tmp_path, guide_cls):
    module, trainer = _fit(tmp_path, 50, guide_cls, init_loc_fn=init_to_median(num_samples=7))
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    torch.manual_seed(5)  # the median of theta (deterministic) is estimated from draws
    torch.save(module.guide.median(), tmp_path / "median.pt")
    script = textwrap.dedent(f"""
        import torch
        from quivers.lightning import SVIModule
        m = SVIModule.load_from_checkpoint({str(ckpt)!r})   # no arguments, no warm-up
        want = torch.load({str(tmp_path / 'median.pt')!r})
        torch.manual_seed(5)
        got = m.guide.median()
        assert set(got) == set(want)
        for k in want:
            assert torch.allclose(got[k], want[k], atol=1e-6, rtol=0), k
        pred = m.predict_step({{"sigma": torch.full((8,), 10.0)}})
        assert pred["y"].shape == (m.num_predict_samples, 8), pred["y"].shape
        print("OK", type(m.guide).__name__)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"OK {guide_cls.__name__}" in out.stdout


def test_checkpoint_holds_only_plain_data(tmp_path):
    _, trainer = _fit(tmp_path, 5)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    ckpt = torch.load(tmp_path / "m.ckpt", weights_only=True)  # raises if anything needs unpickling
    assert ckpt["hyper_parameters"]["guide"]["class_path"] == "quivers.guides.normal.AutoNormalGuide"
    assert ckpt["quivers"]["version"]


def test_resume_equals_uninterrupted(tmp_path):
    straight, _ = _fit(tmp_path / "a", 200)
    first, trainer = _fit(tmp_path / "b", 100)
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    L.seed_everything(123)  # a different seed: the checkpoint's RNG state must take over
    model = EightSchools()
    resumed = SVIModule(model, AutoNormalGuide(model), elbo=Trace_ELBO(num_particles=2), lr=0.02)
    _trainer(tmp_path / "c", 200).fit(resumed, EightSchoolsData(), ckpt_path=tmp_path / "mid.ckpt")
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), k


def test_unrecordable_argument_warns_and_reload_uses_default(tmp_path):
    model = EightSchools()
    custom_init = lambda site: torch.zeros(site.shape) if site.name != "tau" else torch.ones(site.shape)  # noqa: E731
    with pytest.warns(UserWarning, match="'init_loc_fn' cannot be recorded"):
        module = SVIModule(model, AutoNormalGuide(model, init_loc_fn=custom_init))
    trainer = _trainer(tmp_path, 3)
    trainer.fit(module, EightSchoolsData())
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    again = SVIModule.load_from_checkpoint(tmp_path / "m.ckpt")
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), again.state_dict().values(),
                                                  strict=True))


def _minibatch_fit(root, steps, ckpt_path=None, seed=0, **trainer_kw):
    L.seed_everything(seed)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(100, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 * torch.randn(100, generator=g)
    model = BayesianLinearRegression(3)
    module = SVIModule(model, AutoNormalGuide(model), lr=0.05)
    data = TensorDataModule({"x": x, "y": y}, batch_size=16)  # 7 shuffled batches an epoch
    trainer = _trainer(root, steps, **trainer_kw)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return module, trainer


def test_resume_mid_epoch_with_shuffled_minibatches_equals_uninterrupted(tmp_path):
    """The data loader's position and shuffling state travel in the checkpoint (torchdata's
    StatefulDataLoader): a fit stopped after 10 steps (3 batches into the second epoch)
    and resumed under another global seed sees the uninterrupted fit's batches."""
    straight, _ = _minibatch_fit(tmp_path / "a", 30)
    every_10 = ModelCheckpoint(tmp_path / "b", every_n_train_steps=10, save_top_k=-1)
    _minibatch_fit(tmp_path / "b", 20, callbacks=[every_10])  # killed after step 20, say
    mid = tmp_path / "b" / "epoch=1-step=10.ckpt"
    resumed, _ = _minibatch_fit(tmp_path / "c", 30, ckpt_path=mid, seed=123)
    L.seed_everything(0)
    start = AutoNormalGuide(BayesianLinearRegression(3)).state_dict()
    assert any((straight.guide.state_dict()[k] - v).abs().max() > 1e-2 for k, v in start.items())  # it moved
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        # the same float32 operations in the same order: equal up to summation order (~1e-7)
        assert torch.allclose(a, b, atol=1e-6, rtol=0), (k, (a - b).abs().max())
