"""Every tensor the library makes follows the device and dtype of the parameters or the
batch. PyTorch's ``meta`` device catches a CPU tensor made inside a step without a GPU:
every guide x objective x (SVI, SVIModule) takes a step with model, guide and batch on
``meta`` (validation off: its checks read values, which meta tensors do not have)."""

from __future__ import annotations

import pytest
import torch

import quivers
from quivers.datasets import EIGHT_SCHOOLS_SIGMA, EIGHT_SCHOOLS_Y, simulate_varying_intercepts
from quivers.guides import (
    AutoBNAFNormal,
    AutoDAIS,
    AutoDeltaGuide,
    AutoDiagonalNormal,
    AutoGuideList,
    AutoIAFNormal,
    AutoLaplaceApproximation,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormalGuide,
    AutoSemiDAIS,
    AutoStructured,
)
from quivers.infer import SVI, Predictive, Trace_ELBO, TraceMeanField_ELBO
from quivers.lightning import SVIModule
from quivers.models import EightSchools, VaryingIntercepts

META = torch.device("meta")
GUIDES = {
    "AutoNormalGuide": AutoNormalGuide, "AutoDeltaGuide": AutoDeltaGuide, "AutoDiagonalNormal": AutoDiagonalNormal,
    "AutoMultivariateNormal": AutoMultivariateNormal, "AutoLowRankMultivariateNormal": AutoLowRankMultivariateNormal,
    "AutoLaplaceApproximation": AutoLaplaceApproximation, "AutoIAFNormal": AutoIAFNormal,
    "AutoBNAFNormal": AutoBNAFNormal, "AutoStructured": AutoStructured,
    "AutoGuideList": lambda m: AutoGuideList(m, [AutoMultivariateNormal(m, observed_names=["eta"]),
                                                 AutoNormalGuide(m, observed_names=["mu", "tau"])]),
    "AutoDAIS": lambda m: AutoDAIS(m, K=2, base_dist="cholesky"), "AutoSemiDAIS": lambda m: AutoSemiDAIS(m, K=2),
}


@pytest.fixture
def no_validation():
    with quivers.validation_enabled(False):
        yield


def _schools(device, dtype=torch.float32):
    model = EightSchools()
    return model, {"y": torch.tensor(EIGHT_SCHOOLS_Y, device=device, dtype=dtype),
                   "sigma": torch.tensor(EIGHT_SCHOOLS_SIGMA, device=device, dtype=dtype)}


def _all_on(tensors, device):
    return all(t.device.type == device.type for t in tensors)


@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceMeanField_ELBO], ids=lambda e: e.__name__)
@pytest.mark.parametrize("name", list(GUIDES))
def test_svi_step_on_meta(name, elbo, no_validation):
    model, batch = _schools(META)
    guide = GUIDES[name](model)
    model.to(META)
    guide.to(META)
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.01), elbo(num_particles=2))
    loss = svi.loss(model, guide, batch)
    assert loss.device == META
    loss.backward()
    svi.optim.step()
    assert _all_on(guide.parameters(), META)
    # (the Laplace guide's posterior draws need its Hessian's eigenvalues: values meta lacks)
    draws = guide.rsample(batch, (3,)) if name == "AutoLaplaceApproximation" else guide.draws(batch, (3,))
    assert _all_on(draws.values(), META)


@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceMeanField_ELBO], ids=lambda e: e.__name__)
@pytest.mark.parametrize("name", list(GUIDES))
def test_svimodule_training_step_on_meta(name, elbo, no_validation):
    model, batch = _schools(META)
    module = SVIModule(model, GUIDES[name](model), elbo=elbo(num_particles=2))
    module.to(META)
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer: Lightning says so and skips logging
        loss = module.training_step(batch, 0)
    assert loss.device == META
    loss.backward()
    assert _all_on((p.grad for p in module.guide.parameters() if p.grad is not None), META)


def test_subsampled_local_latents_and_prediction_on_meta(no_validation):
    d = simulate_varying_intercepts(200, 5, seed=0)
    model = VaryingIntercepts(num_groups=5, num_data=200, subsample_size=32)
    guide = AutoNormalGuide(model)
    model.to(META)
    guide.to(META)
    batch = {k: d[k].to(META) for k in ("x", "group", "y")}
    loss = Trace_ELBO(num_particles=2)(model, guide, batch)
    assert loss.device == META
    loss.backward()
    out = Predictive(model, guide, num_samples=4)(batch)
    assert _all_on(out.values(), META) and out["y"].shape == (4, 200)
    prior = Predictive(model, num_samples=4)({k: v for k, v in batch.items() if k != "y"})
    assert _all_on(prior.values(), META)


@pytest.mark.parametrize("name", list(GUIDES))
def test_float64_models_give_float64_results(name):
    model, batch = _schools("cpu", torch.float64)
    model.double()
    guide = GUIDES[name](model)  # built on the float64 model: float64 parameters
    assert all(p.dtype == torch.float64 for p in guide.parameters())
    loss = Trace_ELBO(num_particles=2)(model, guide, batch)
    assert loss.dtype == torch.float64
    if name == "AutoLaplaceApproximation":
        guide.fit_map(batch)
    assert all(v.dtype == torch.float64 for v in guide.sample_posterior(batch, (3,)).values())
    assert all(v.dtype == torch.float64 for v in Predictive(model, guide, num_samples=3)(batch).values())


@pytest.mark.parametrize("example", ["mixture", "hmm", "changepoint"])
def test_enumeration_on_meta(example, no_validation):
    """``TraceEnum_ELBO`` (model- and guide-side enumeration, a Markov chain), ``TraceGraph_ELBO``
    and ``infer_discrete`` make every tensor on the model's device."""
    from quivers.guides import AutoDiscreteParallel, AutoGuideList
    from quivers.infer import TraceEnum_ELBO, TraceGraph_ELBO, infer_discrete
    from quivers.models import ChangePoint, GaussianHMM

    if example == "mixture":  # diagonal: torch's LKJ transform indexes by a mask, which meta cannot run
        model, batch = _DiagonalMixture(), {"x": torch.randn(10, 2)}
    elif example == "hmm":
        model, batch = GaussianHMM(3, num_steps=12), {"y": torch.randn(12)}
    else:
        model, batch = ChangePoint(12), {"y": torch.poisson(torch.full((12,), 2.0))}
    guide = AutoNormalGuide(model)
    if example == "mixture":
        discrete = AutoDiscreteParallel(model, observed_names=["weights", "locs", "scale"])
        both = AutoGuideList(model, [AutoNormalGuide(model, observed_names=["c"]), discrete]).to(META)
    model.to(META)
    guide.to(META)
    batch = {k: v.to(META) for k, v in batch.items()}
    loss = TraceEnum_ELBO(num_particles=2)(model, guide, batch)
    assert loss.device == META
    loss.backward()
    assert _all_on((p.grad for p in guide.parameters()), META)
    out = infer_discrete(model, guide, batch, temperature=0, num_samples=2)
    assert _all_on(out.values(), META)
    if example == "mixture":
        for elbo in (TraceEnum_ELBO(), TraceGraph_ELBO()):
            loss = elbo(model, both, batch)
            assert loss.device == META
            loss.backward()


class _DiagonalMixture(quivers.MonadicProgram):
    def __init__(self):
        from torch import distributions as dist

        super().__init__()
        self.register_buffer("_zeros", torch.zeros(3, 2))
        self.register_buffer("_ones", torch.ones(3))
        data = quivers.Plate("data", size=10)
        self.declare(
            quivers.Latent("weights", lambda: dist.Dirichlet(self._ones)),
            quivers.Latent("locs", lambda: dist.Independent(dist.Normal(self._zeros, 3.0), 2)),
            quivers.Latent("scale", lambda: dist.LogNormal(self._zeros[0, 0], 1.0)),
            quivers.Latent("c", lambda weights: dist.Categorical(weights), plate=data, enumerate="parallel"),
            quivers.Observed("x", lambda c, locs, scale: dist.Independent(
                dist.Normal(quivers.vindex(locs, c, 1), scale.unsqueeze(-1)), 1), plate=data),
        )


@pytest.mark.parametrize("surgery", ["condition", "do", "mask_scale", "loc_scale", "transform"])
def test_derived_programs_on_meta(surgery, no_validation):
    """Surgery and reparameterisers: made on a model already on meta, their values, masks,
    scales and new parameters follow it; made on the CPU and moved, a step's every tensor
    stays on meta."""
    from quivers.program import LocScaleReparam, TransformReparam

    def derive(model):
        return {
            "condition": lambda: model.condition({"tau": 2.0}),
            "do": lambda: model.do({"tau": 2.0}),
            "mask_scale": lambda: model.mask("y", torch.ones(8, dtype=torch.bool)).scale("y", torch.full((8,), 0.5)),
            "loc_scale": lambda: model.reparam({"eta": LocScaleReparam()}),
            "transform": lambda: model.reparam({"tau": TransformReparam()}),
        }[surgery]()

    on_meta = derive(EightSchools().to(META))
    assert _all_on(on_meta.buffers(), META) and _all_on(on_meta.parameters(), META)
    model, batch = _schools(META)
    derived = derive(model)
    guide = AutoNormalGuide(derived)
    derived.to(META)
    guide.to(META)
    params = [*guide.parameters(), *derived.parameters()]
    svi = SVI(derived, guide, torch.optim.Adam(params, lr=0.01), Trace_ELBO(num_particles=2))
    loss = svi.loss(derived, guide, batch)
    assert loss.device == META
    loss.backward()
    svi.optim.step()
    assert _all_on(params, META)
