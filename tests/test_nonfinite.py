"""Non-finite losses and gradients: named sites, no step applied, or skipped and counted."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import distributions as dist
from torch.utils.data import DataLoader

from quivers import Factor, Latent, MonadicProgram, Observed, Plate
from quivers.errors import NonFiniteLossError
from quivers.guides import AutoNormalGuide
from quivers.infer import SVI, Trace_ELBO
from quivers.lightning import SVIModule


class Fragile(MonadicProgram):
    """A factor ``log(x - 1)`` that is NaN when the batch's ``x`` is below 1."""

    def __init__(self, n=4):
        super().__init__()
        data = Plate("data", size=n)
        self.declare(
            Latent("z", lambda: dist.Normal(0.0, 1.0)),
            Observed("y", lambda z: dist.Normal(z, 1.0), plate=data),
            Factor("fragile", lambda x: torch.log(x - 1.0).sum()),
        )


GOOD = {"y": torch.zeros(4), "x": torch.full((4,), 2.0)}
BAD = {"y": torch.zeros(4), "x": torch.zeros(4)}


def _state(guide):
    return {k: v.clone() for k, v in guide.state_dict().items()}


def test_svi_raises_naming_the_site_and_leaves_parameters_unchanged():
    model = Fragile()
    guide = AutoNormalGuide(model)
    optim = torch.optim.Adam(guide.parameters(), lr=0.1)
    svi = SVI(model, guide, optim, Trace_ELBO())
    svi.step(GOOD)
    before, opt_before = _state(guide), optim.state_dict()["state"][0]["step"].clone()
    want = r"step 2: loss nan; non-finite log-density at site\(s\) \['fragile'\]"
    with pytest.raises(NonFiniteLossError, match=want) as e:
        svi.step(BAD)
    assert e.value.sites == ["fragile"]
    assert all(torch.equal(v, guide.state_dict()[k]) for k, v in before.items())
    assert torch.equal(optim.state_dict()["state"][0]["step"], opt_before)  # Adam state untouched


def test_svi_skip_counts_and_goes_on():
    model = Fragile()
    guide = AutoNormalGuide(model)
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.1), Trace_ELBO(), on_nonfinite="skip")
    before = _state(guide)
    svi.step(BAD)
    assert svi.num_skipped_steps == 1
    assert all(torch.equal(v, guide.state_dict()[k]) for k, v in before.items())
    svi.step(GOOD)
    assert svi.num_skipped_steps == 1
    assert not torch.equal(before["locs.z"], guide.state_dict()["locs.z"])


def test_bad_policy_is_rejected():
    model = Fragile()
    guide = AutoNormalGuide(model)
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        SVI(model, guide, torch.optim.Adam(guide.parameters()), on_nonfinite="ignore")
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        SVIModule(model, guide, on_nonfinite="ignore")


def _trainer(tmp_path, steps):
    return L.Trainer(max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False, default_root_dir=tmp_path)


def _loader(*batches):
    return DataLoader(list(batches), batch_size=None)


def test_svimodule_raises_before_the_optimizer_step(tmp_path):
    model = Fragile()
    module = SVIModule(model, AutoNormalGuide(model), lr=0.1)
    _trainer(tmp_path, 1).fit(module, _loader(GOOD))
    before = _state(module.guide)
    with pytest.raises(NonFiniteLossError, match=r"\['fragile'\]"):
        _trainer(tmp_path, 1).fit(module, _loader(BAD))
    assert all(torch.equal(v, module.guide.state_dict()[k]) for k, v in before.items())


def test_svimodule_skip_counts_and_logs(tmp_path):
    model = Fragile()
    module = SVIModule(model, AutoNormalGuide(model), lr=0.1, on_nonfinite="skip")
    trainer = _trainer(tmp_path, 2)
    trainer.fit(module, _loader(BAD, GOOD, GOOD))
    assert module.num_skipped_steps == 1
    assert trainer.global_step == 2  # Lightning counts the skipped step: two batches ran, one step applied
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == 2
    assert float(trainer.callback_metrics["train/skipped_steps"]) == 1.0


def test_a_run_of_skipped_steps_warns_once():
    model = Fragile()
    guide = AutoNormalGuide(model)
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.1), on_nonfinite="skip")
    with pytest.warns(RuntimeWarning, match="last 10 steps were all skipped") as record:
        for _ in range(25):
            svi.step(BAD)
    assert svi.num_skipped_steps == 25
    assert sum("were all skipped" in str(w.message) for w in record) == 1  # once per run of skips
    svi.step(GOOD)
    with pytest.warns(RuntimeWarning, match="last 10 steps"):
        for _ in range(10):
            svi.step(BAD)
