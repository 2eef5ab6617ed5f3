"""The compiled path: ``SVI(compile=True)`` and ``SVIModule(compile=True)``."""

from __future__ import annotations

import shutil
import warnings

import lightning as L
import pytest
import torch
import torch._dynamo
from helpers import NormalNormal
from torch import distributions as dist

from quivers import Latent, MonadicProgram, Observed, Plate
from quivers.datasets import TensorDataModule, load_breast_cancer, simulate_varying_intercepts
from quivers.datasets.real import EIGHT_SCHOOLS_SIGMA, EIGHT_SCHOOLS_Y
from quivers.guides import AutoNormalGuide
from quivers.infer import SVI, Trace_ELBO
from quivers.lightning import SVIModule
from quivers.models import BayesianLogisticRegression, EightSchools, VaryingIntercepts
from quivers.validation import validation_enabled

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                    reason="inductor needs a C++ compiler on CPU")


def _benchmark_problems():
    vi = simulate_varying_intercepts(2000, 50, seed=0)
    vi.pop("true_a")
    return [
        (EightSchools(), {"y": torch.tensor(EIGHT_SCHOOLS_Y), "sigma": torch.tensor(EIGHT_SCHOOLS_SIGMA)}),
        (BayesianLogisticRegression(30), load_breast_cancer()),
        (VaryingIntercepts(50, num_data=2000, subsample_size=128), vi),
    ]


@pytest.mark.parametrize("i", range(3), ids=["eight_schools", "logistic", "varying_intercepts"])
@pytest.mark.parametrize("particles", [1, 4])
def test_elbo_has_no_graph_breaks(i, particles):
    model, data = _benchmark_problems()[i]
    guide, elbo = AutoNormalGuide(model), Trace_ELBO(num_particles=particles)
    batch = model.prepare(data)  # subsampling happens eagerly, outside the graph
    torch._dynamo.reset()
    with validation_enabled(False):
        explained = torch._dynamo.explain(lambda b: elbo(model, guide, b))(batch)
    assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons]
    assert explained.graph_count == 1


@needs_compiler
def test_compiled_svi_recovers_exact_posterior():
    torch.manual_seed(0)
    y = 1.0 + torch.randn(20)
    model = NormalNormal(20)
    guide = AutoNormalGuide(model)
    optim = torch.optim.Adam(guide.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.ExponentialLR(optim, gamma=0.01 ** (1 / 1500))
    svi = SVI(model, guide, optim, Trace_ELBO(num_particles=8), compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        for _ in range(1500):
            svi.step({"y": y})
            sched.step()
    assert not svi._objective.is_eager
    mean, sd = model.posterior(y)
    # the posterior sd is 0.22; same tolerances as the eager conjugate tests (SGD noise at the
    # final learning rate is well below them)
    assert abs(float(guide.locs["z"].detach()) - mean) < 0.05
    assert abs(float(guide.scales()["z"].detach()) / sd - 1) < 0.05


class Uncompilable(MonadicProgram):
    """A step function that reads a tensor into Python (a graph break under fullgraph)."""

    def __init__(self):
        super().__init__()
        self.declare(
            Latent("z", lambda: dist.Normal(0.0, 1.0)),
            Observed("y", lambda z: dist.Normal(z * (1.0 if float(z.detach().sum()) > -1e9 else 2.0), 1.0),
                     plate=Plate("data", size=5)),
        )


def test_uncompilable_model_falls_back_to_eager_with_a_warning():
    y = torch.randn(5)
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(1)
        model = Uncompilable()
        guide = AutoNormalGuide(model)
        svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.1), compile=compiled)
        if compiled:
            with pytest.warns(UserWarning, match="cannot be compiled; running eagerly"):
                losses[compiled] = [svi.step({"y": y}) for _ in range(5)]
            assert svi._objective.is_eager
        else:
            losses[compiled] = [svi.step({"y": y}) for _ in range(5)]
    # the loss falls back to the eager computation draw for draw; the optimizer step is
    # still compiled, whose fused arithmetic differs from eager Adam in the last float bits
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_compiled_first_step_still_validates():
    model = NormalNormal(3)
    guide = AutoNormalGuide(model)
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.1), compile=True)
    before = {k: v.clone() for k, v in guide.state_dict().items()}
    with pytest.raises(ValueError, match="'y'"):
        svi.step({"y": torch.tensor([0.0, float("nan"), 1.0])})
    assert all(torch.equal(before[k], v) for k, v in guide.state_dict().items())


@needs_compiler
def test_svimodule_compile_fits_and_reloads(tmp_path):
    L.seed_everything(0)
    y = 1.0 + torch.randn(50)
    model = NormalNormal(50)
    module = SVIModule(model, AutoNormalGuide(model), lr=0.05, compile=True)
    trainer = L.Trainer(max_steps=300, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, TensorDataModule({"y": y}))
    assert not [w for w in caught if "cannot be compiled" in str(w.message)]
    assert not module._compiled.is_eager
    mean, _ = model.posterior(y)
    assert abs(float(module.guide.locs["z"].detach()) - mean) < 0.1  # 300 steps at lr 0.05: near the optimum
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    reloaded = SVIModule.load_from_checkpoint(path, trusted=("helpers",))  # the test model lives in tests/helpers.py
    assert reloaded.hparams["compile"] is True
    assert torch.equal(reloaded.guide.locs["z"], module.guide.locs["z"])


def test_many_compiled_fits_in_one_process_stay_compiled():
    """TorchDynamo's recompile limit (8) is per code object: every objective compiles its
    own copy of the loss, so the tenth fit in a process is still compiled (it used to hit
    FailOnRecompileLimitHit)."""
    torch.manual_seed(0)
    y = torch.randn(5)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*cannot be compiled")
        for _ in range(10):
            model = NormalNormal(5)
            guide = AutoNormalGuide(model)
            svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.01), Trace_ELBO(), compile=True)
            for _ in range(3):
                svi.step({"y": y})
            assert not svi._objective.is_eager


@needs_compiler
def test_enumerated_models_compile_to_the_eager_value():
    """``TraceEnum_ELBO`` on a mixture (a site summed out per data point) and an HMM (a
    Markov chain): the compiled objective equals the eager one at the same point, with no
    graph break."""
    from quivers import Markov, vindex
    from quivers.guides import AutoDelta
    from quivers.infer import CompiledObjective, TraceEnum_ELBO

    class Mix(MonadicProgram):
        def __init__(self):
            super().__init__()
            data = Plate("data", size=20)
            self.declare(
                Latent("locs", lambda: dist.Independent(dist.Normal(torch.zeros(3), 5.0), 1)),
                Latent("c", lambda: dist.Categorical(logits=torch.zeros(3)), plate=data, enumerate="parallel"),
                Observed("x", lambda c, locs: dist.Normal(vindex(locs, c), 1.0), plate=data),
            )

    class HMM(MonadicProgram):
        def __init__(self):
            super().__init__()
            time = Plate("time", size=30)
            self.declare(
                Latent("trans", lambda: dist.Independent(dist.Dirichlet(torch.ones(3, 3)), 1)),
                Markov("z", init=lambda: dist.Categorical(logits=torch.zeros(3)),
                       transition=lambda prev, trans: dist.Categorical(probs=vindex(trans, prev, 1)), plate=time),
                Observed("y", lambda z: dist.Normal(z.to(torch.get_default_dtype()), 1.0), plate=time),
            )

    for model, batch in ((Mix(), {"x": torch.randn(20) * 3}), (HMM(), {"y": torch.randn(30)})):
        guide = AutoDelta(model)
        elbo = TraceEnum_ELBO()
        eager = elbo(model, guide, batch)
        torch._dynamo.reset()
        compiled = CompiledObjective(elbo, model, guide)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*cannot be compiled")  # a fallback to eager warns
            compiled(batch)  # the first call runs eagerly, with every check
            value = compiled(batch)
        assert not compiled.is_eager
        torch.testing.assert_close(value, eager, rtol=1e-5, atol=1e-4)
