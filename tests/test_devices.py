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
