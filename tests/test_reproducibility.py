"""Reproducibility on CPU: the same seed gives bitwise-identical parameters, in this process
and in a fresh one, for ``SVI`` and for ``Trainer.fit``. (Resuming from a mid-run checkpoint
equals the uninterrupted run: ``test_checkpoint.py::test_resume_equals_uninterrupted``.)

Every fit here draws random numbers three ways: the guide's initialisation, the ELBO's
particles, and the data (``SVI``: the plate's random subsample; ``Trainer.fit``: the data
loader's shuffled minibatches), so a seed that did not reach one of them shows up.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import lightning as L
import pytest
import torch
from helpers import short_trainer

from quivers.datasets import VaryingInterceptsData, simulate_varying_intercepts
from quivers.guides import AutoIAFNormal, AutoMultivariateNormal, AutoNormalGuide
from quivers.infer import SVI, Trace_ELBO
from quivers.lightning import SVIModule
from quivers.models import VaryingIntercepts

ROWS, GROUPS, SUBSAMPLE, STEPS = 2000, 20, 100, 60


def svi_fit(guide_cls: type, seed: int, compile: bool = False) -> dict[str, torch.Tensor]:
    """``STEPS`` SVI steps on subsampled varying intercepts (4 particles) from ``seed``."""
    batch = simulate_varying_intercepts(ROWS, GROUPS, seed=0)
    batch.pop("true_a")
    torch.manual_seed(seed)
    model = VaryingIntercepts(GROUPS, num_data=ROWS, subsample_size=SUBSAMPLE)
    guide = guide_cls(model)
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.01), Trace_ELBO(num_particles=4),
              compile=compile)
    for _ in range(STEPS):
        svi.step(batch)
    return {k: v.detach().clone() for k, v in guide.state_dict().items()}


def trainer_fit(root: pathlib.Path, seed: int) -> dict[str, torch.Tensor]:
    """``Trainer.fit`` for ``STEPS`` steps over shuffled minibatches of 256 rows, from ``seed``."""
    L.seed_everything(seed, verbose=False)
    model = VaryingIntercepts(GROUPS)
    module = SVIModule(model, AutoNormalGuide(model), elbo=Trace_ELBO(num_particles=4), lr=0.05)
    trainer = short_trainer(root, steps=STEPS)
    trainer.fit(module, VaryingInterceptsData(num_rows=ROWS, num_groups=GROUPS, batch_size=256, seed=seed))
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"not bitwise equal: {differ}"


def assert_differ(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    # the control: another seed must change the result, or the equality above proves nothing
    assert any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("guide_cls", [AutoNormalGuide, AutoMultivariateNormal, AutoIAFNormal])
def test_svi_same_seed_is_bitwise_identical(guide_cls):
    first = svi_fit(guide_cls, seed=0)
    assert_bitwise_equal(first, svi_fit(guide_cls, seed=0))
    assert_differ(first, svi_fit(guide_cls, seed=1))


def test_compiled_svi_same_seed_is_bitwise_identical():
    first = svi_fit(AutoNormalGuide, seed=0, compile=True)
    assert_bitwise_equal(first, svi_fit(AutoNormalGuide, seed=0, compile=True))


def test_svi_is_bitwise_identical_in_a_fresh_process(tmp_path):
    out = tmp_path / "params.pt"
    script = textwrap.dedent(f"""
        import sys, torch
        torch.set_num_threads({torch.get_num_threads()})  # as this process: BLAS results depend on it
        sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
        from test_reproducibility import svi_fit
        from quivers.guides import AutoMultivariateNormal
        torch.save(svi_fit(AutoMultivariateNormal, seed=0), {str(out)!r})
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert_bitwise_equal(svi_fit(AutoMultivariateNormal, seed=0), torch.load(out, weights_only=True))


def test_trainer_fit_same_seed_is_bitwise_identical(tmp_path):
    first = trainer_fit(tmp_path, seed=0)
    assert_bitwise_equal(first, trainer_fit(tmp_path, seed=0))
    assert_differ(first, trainer_fit(tmp_path, seed=1))
