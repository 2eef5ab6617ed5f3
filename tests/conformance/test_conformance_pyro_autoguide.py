"""Pyro's ``tests/infer/test_autoguide.py`` (pyro-ppl/pyro @ 6e9cb966), ported to quivers.

Same models, data sizes, step counts, learning rates and tolerances, written against
quivers' API. Where the anchor runs three objectives, the ports run quivers' ELBOs
(``TraceGraph_ELBO`` and ``TraceEnum_ELBO`` arrive with the enumeration issue). Each test
names what it adapts; ``docs/conformance.md`` lists every anchor test and its status.
"""

from __future__ import annotations

import functools
import io
import math

import pytest
import torch
import torch.nn.functional as F
from anchors import ALL, WITH_DELTA, Delta, name, run_svi, step_fn
from torch import distributions as dist
from torch import nn

from quivers import Factor, Latent, MonadicProgram, Observed, Param, Plate
from quivers.errors import GuideError
from quivers.guides import (
    AutoCallable,
    AutoDelta,
    AutoDiagonalNormal,
    AutoGuideList,
    AutoIAFNormal,
    AutoLaplaceApproximation,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
    Guide,
    init_to_feasible,
    init_to_mean,
    init_to_median,
    init_to_sample,
)
from quivers.infer import SVI, Predictive, Trace_ELBO, TraceMeanField_ELBO

ELBOS = [Trace_ELBO, TraceMeanField_ELBO]


def _normal(*shape: int, scale: float = 1.0) -> dist.Distribution:
    d = dist.Normal(torch.zeros(shape), scale)
    return dist.Independent(d, len(shape)) if shape else dist.Normal(0.0, scale)


# ---------------------------------------------------------------------------- test_scores
@pytest.mark.parametrize("auto_class", [AutoDiagonalNormal, AutoMultivariateNormal, AutoNormal,
                                        AutoLowRankMultivariateNormal, AutoIAFNormal], ids=name)
def test_scores(auto_class):
    """The guide carries its density, the model's site its own. (Pyro checks that its
    auxiliary ``_latent`` site scores and the model-facing Delta site does not; quivers
    guides have no auxiliary site, so the guide's ``log_prob`` must equal the density its
    sampler reports and be non-zero.)"""

    class Model(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Latent("z", lambda: _normal(10) if auto_class is AutoIAFNormal else _normal()))

    model = Model()
    guide = auto_class(model)
    z, lq = guide.rsample_and_log_prob(None)
    assert float(lq) != 0.0
    assert torch.allclose(guide.log_prob(None, z), lq, atol=1e-5)
    assert float(model.trace(None, z)["z"].log_prob) != 0.0


# ---------------------------------------------------------------------------- test_factor
class FactorModel(MonadicProgram):
    def __init__(self):
        super().__init__()
        plate = Plate("plate", size=3)
        self.declare(
            Latent("z1", lambda: _normal()),
            Factor("f1", lambda log_factor: log_factor),
            Latent("z2", lambda: _normal(2)),
            Factor("f2", lambda log_factor: log_factor, plate=plate),
            Latent("z3", lambda: dist.Normal(torch.zeros(3), torch.ones(3)), plate=plate),
        )


@pytest.mark.parametrize("elbo", ELBOS, ids=name)
@pytest.mark.parametrize("auto_class", ALL, ids=name)
def test_factor(auto_class, elbo):
    """A factor of 1 outside any plate and one in a plate of size 3 raise the log joint by
    1 + 3 (the anchor's exact check, on the loss with the same seed)."""
    model = FactorModel()
    guide = auto_class(model)
    torch.manual_seed(123)
    loss_5 = elbo().loss(model, guide, {"log_factor": torch.tensor(5.0)})
    torch.manual_seed(123)
    loss_4 = elbo().loss(model, guide, {"log_factor": torch.tensor(4.0)})
    assert loss_5 - loss_4 == pytest.approx(-1 - 3, abs=1e-4)


# ---------------------------------------------------------------------------- test_shapes
class ShapesModel(MonadicProgram):
    """Pyro's model minus ``z6`` (a masked distribution: masking sites arrives with the
    model-transformation issue)."""

    def __init__(self):
        super().__init__()
        plate = Plate("plate", size=3)
        self.declare(
            Latent("z1", lambda: _normal()),
            Latent("z2", lambda: _normal(2)),
            Latent("z3", lambda: dist.Normal(torch.zeros(3), torch.ones(3)), plate=plate),
            Latent("z4", lambda: dist.MultivariateNormal(torch.zeros(2), torch.eye(2))),
            Latent("z5", lambda: dist.Dirichlet(torch.ones(3))),
        )


@pytest.mark.parametrize("elbo", ELBOS, ids=name)
@pytest.mark.parametrize("init_loc_fn", [init_to_feasible, init_to_mean, init_to_median, init_to_sample], ids=name)
@pytest.mark.parametrize("auto_class", ALL, ids=name)
def test_shapes(auto_class, init_loc_fn, elbo):
    model = ShapesModel()
    guide = auto_class(model, init_loc_fn=init_loc_fn)
    assert math.isfinite(elbo().loss(model, guide, None))


# ---------------------------------------------------------------------------- guide lists
class XYZ(MonadicProgram):
    def __init__(self):
        super().__init__()
        self.declare(
            Latent("x", lambda: dist.Normal(0.0, 1.0)),
            Latent("y", lambda: dist.LogNormal(0.0, 1.0)),
            Latent("z", lambda: dist.Beta(2.0, 2.0)),
        )


class _GuideX(nn.Module):
    """``x ~ Normal(x_loc, x_scale)`` as a callable (Pyro's ``guide_x`` with its params)."""

    def __init__(self):
        super().__init__()
        self.x_loc = nn.Parameter(torch.tensor(1.0))
        self.x_scale_raw = nn.Parameter(torch.tensor(0.1).expm1().log())

    def forward(self, batch):  # noqa: ANN001
        return {"x": dist.Normal(self.x_loc, F.softplus(self.x_scale_raw))}


class GuideX(Guide):
    """A user's own guide for ``x`` (Pyro's ``GuideX(AutoGuide)``), with its own median."""

    def __init__(self, model):  # noqa: ANN001
        super().__init__(model)
        self.x_loc = nn.Parameter(torch.tensor(1.0))
        self.x_scale_raw = nn.Parameter(torch.tensor(0.1).expm1().log())

    @property
    def latent_names(self):
        return ["x"]

    def _q(self):
        return dist.Normal(self.x_loc, F.softplus(self.x_scale_raw))

    def rsample(self, batch=None, sample_shape=()):  # noqa: ANN001
        return {"x": self._q().rsample(torch.Size(sample_shape))}

    def log_prob(self, batch, sites):  # noqa: ANN001
        return self._q().log_prob(sites["x"])

    def latent_median(self, batch=None, num_samples=1000):  # noqa: ANN001
        return {"x": self.x_loc.detach()}


def auto_guide_list_x(model):
    guide = AutoGuideList(model)
    guide.append(AutoDelta(model, observed_names=[n for n in model.latent_names if n != "x"]))
    guide.append(AutoDiagonalNormal(model, observed_names=["x"]))
    return guide


def auto_guide_callable(model):
    g = _GuideX()
    guide = AutoGuideList(model)
    guide.append(AutoCallable(model, g, lambda batch: {"x": g.x_loc.detach()},
                              observed_names=[n for n in model.latent_names if n != "x"]))
    guide.append(AutoDiagonalNormal(model, observed_names=["x"]))
    return guide


def auto_guide_module_callable(model):
    guide = AutoGuideList(model)
    guide.append(GuideX(model))
    guide.append(AutoDiagonalNormal(model, observed_names=["x"]))
    return guide


def nested_auto_guide_callable(model):
    """Pyro's nests an IAF over ``y`` and leaves ``z`` to no part (its test never runs the
    model); here the inner IAF covers every site but ``x``."""
    guide = AutoGuideList(model)
    guide.append(AutoDelta(model, observed_names=[n for n in model.latent_names if n != "x"]))
    inner = AutoGuideList(model)
    inner.append(AutoIAFNormal(model, observed_names=["x"]))
    guide.append(inner)
    return guide


MEDIAN_GUIDES = [
    *WITH_DELTA, AutoLaplaceApproximation, auto_guide_list_x, auto_guide_callable, auto_guide_module_callable,
    functools.partial(AutoDiagonalNormal, init_loc_fn=init_to_feasible),
    functools.partial(AutoDiagonalNormal, init_loc_fn=init_to_mean),
    functools.partial(AutoDiagonalNormal, init_loc_fn=init_to_median),
    functools.partial(AutoDiagonalNormal, init_loc_fn=init_to_sample),
]


def _ids(g) -> str:  # noqa: ANN001
    if isinstance(g, functools.partial):
        return f"{g.func.__name__}-{g.keywords['init_loc_fn'].__name__}"
    return name(g)


def _fit_xyz(auto_class):
    """The anchors' fit of test_median and test_quantiles: 100 Adam steps (lr 0.05, betas
    (0.8, 0.99), 100 particles), then the settling phase (see ``run_svi``)."""
    model = XYZ()
    guide = auto_class(model)
    run_svi(model, guide, steps=100, lr=0.05, betas=(0.8, 0.99), num_particles=100, settle=100)
    return guide.laplace_approximation() if auto_class is AutoLaplaceApproximation else guide


@pytest.mark.parametrize("auto_class", MEDIAN_GUIDES, ids=_ids)
def test_median(auto_class):
    guide = _fit_xyz(auto_class)
    median = guide.median()
    assert median["x"].shape == () and median["y"].shape == ()  # a global scalar's median is a scalar
    assert abs(float(median["x"]) - 0.0) < 0.1
    # a point mass sits at the constrained mode, exp(-1), where the others find the median 1
    assert abs(float(median["y"]) - (math.exp(-1) if auto_class is AutoDelta else 1.0)) < 0.1
    assert abs(float(median["z"]) - 0.5) < 0.1


@pytest.mark.parametrize("auto_class", [AutoDiagonalNormal, AutoMultivariateNormal, AutoNormal,
                                        AutoLowRankMultivariateNormal, AutoLaplaceApproximation], ids=name)
def test_quantiles(auto_class):
    guide = _fit_xyz(auto_class)
    quantiles = guide.quantiles([0.1, 0.5, 0.9])
    median = guide.median()
    for n in ["x", "y", "z"]:
        assert quantiles[n].shape == (3,)
        assert torch.allclose(median[n], quantiles[n][1])
    q = {n: [float(v) for v in value] for n, value in quantiles.items()}
    assert -3.0 < q["x"][0] and q["x"][0] + 1.0 < q["x"][1] and q["x"][1] + 1.0 < q["x"][2] and q["x"][2] < 3.0
    assert 0.01 < q["y"][0] and q["y"][0] * 2.0 < q["y"][1] and q["y"][1] * 2.0 < q["y"][2] and q["y"][2] < 100.0
    assert 0.01 < q["z"][0] and q["z"][0] + 0.1 < q["z"][1] and q["z"][1] + 0.1 < q["z"][2] and q["z"][2] < 0.99


# ---------------------------------------------------------------------------- serialization
class PlatedXYZ(MonadicProgram):
    def __init__(self):
        super().__init__()
        plate = Plate("plate", size=2)
        self.declare(
            Latent("x", lambda: dist.Normal(0.0, 1.0)),
            Latent("y", lambda: dist.LogNormal(0.0, 1.0), plate=plate),
            Latent("z", lambda: dist.Beta(2.0, 2.0), plate=plate),
        )


@pytest.mark.parametrize("auto_class", [
    *WITH_DELTA, AutoLaplaceApproximation, auto_guide_list_x, auto_guide_module_callable, nested_auto_guide_callable,
    functools.partial(AutoDiagonalNormal, init_loc_fn=init_to_feasible),
    functools.partial(AutoDiagonalNormal, init_loc_fn=init_to_mean),
    functools.partial(AutoDiagonalNormal, init_loc_fn=init_to_median),
    functools.partial(AutoDiagonalNormal, init_loc_fn=init_to_sample),
], ids=_ids)
def test_autoguide_serialization(auto_class):
    """Adapted: Pyro serialises with ``torch.jit``; a quivers guide is an ``nn.Module``
    whose ``state_dict`` (saved with ``torch.save``, read with ``weights_only=True``)
    rebuilds it. A fresh guide loaded from the bytes draws the same values with the same
    seed and has the same parameter names and values."""
    model = PlatedXYZ()
    guide = auto_class(model)
    run_svi(model, guide, steps=5)
    f = io.BytesIO()
    torch.save(guide.state_dict(), f)
    f.seek(0)
    fresh = auto_class(model)
    fresh.load_state_dict(torch.load(f, weights_only=True))
    if auto_class is AutoLaplaceApproximation:
        guide, fresh = guide.laplace_approximation(), fresh.laplace_approximation()
    torch.manual_seed(0)
    expected = guide.sample_posterior()
    torch.manual_seed(0)
    actual = fresh.sample_posterior()
    assert sorted(actual) == sorted(expected)
    for k in expected:
        assert torch.equal(actual[k], expected[k]), k
    expected_params = dict(guide.named_parameters())
    actual_params = dict(fresh.named_parameters())
    assert set(actual_params) == set(expected_params)
    for k, v in expected_params.items():
        assert torch.equal(actual_params[k], v), k


# ---------------------------------------------------------------------------- guide lists, callables
class XY(MonadicProgram):
    def __init__(self, x_event: int | None = None):
        super().__init__()
        self.declare(
            Latent("x", lambda: _normal(x_event) if x_event else _normal()),
            Latent("y", lambda: dist.MultivariateNormal(torch.zeros(5), torch.eye(5))),
        )


@pytest.mark.parametrize("auto_class", ALL, ids=name)
def test_guide_list(auto_class):
    model = XY(x_event=2)
    guide = AutoGuideList(model)
    guide.append(auto_class(model, observed_names=["y"]))
    guide.append(auto_class(model, observed_names=["x"]))
    values = guide()
    assert values["x"].shape == (2,) and values["y"].shape == (5,)


@pytest.mark.parametrize("auto_class", [*WITH_DELTA, AutoLaplaceApproximation], ids=name)
def test_callable(auto_class):
    """``append`` of a plain callable wraps it in ``AutoCallable`` over the sites it
    returns. (Pyro's ``test_callable`` and ``test_callable_return_dict``: a quivers callable
    always returns its distributions, so the list returns ``x`` in both.)"""
    model = XY()
    x_loc = nn.Parameter(torch.tensor(0.0))

    def guide_x(batch):  # noqa: ANN001
        return {"x": Delta(x_loc)}

    guide = AutoGuideList(model)
    guide.append(guide_x)
    guide.append(auto_class(model, observed_names=["x"]))
    assert isinstance(guide[0], AutoCallable) and guide[0].latent_names == ["x"]
    values = guide()
    assert set(values) == {"x", "y"}


def test_empty_model_error():
    class Empty(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Observed("y", lambda: dist.Normal(0.0, 1.0)))

    with pytest.raises(GuideError, match="no latent sites"):
        AutoDiagonalNormal(Empty())


def test_unpack_latent():
    class LKJ(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Latent("x", lambda: dist.LKJCholesky(2, torch.tensor(1.0))))

    model = LKJ()
    guide = AutoDiagonalNormal(model)
    assert guide()["x"].shape == model.sample()["x"].shape == (2, 2)
    latent = guide.get_posterior().sample()
    assert list(guide.registry.unpack(latent).values())[0].shape == (1,)


@pytest.mark.parametrize("auto_class", WITH_DELTA, ids=name)
def test_init_loc_fn(auto_class):
    model = XY()
    inits = {"x": torch.randn(()), "y": torch.randn(5)}

    def init_loc_fn(site):  # noqa: ANN001
        return inits[site.name]

    guide = auto_class(model, init_loc_fn=init_loc_fn)
    guide()
    median = guide.median()
    assert torch.allclose(median["x"], inits["x"], atol=1e-6)
    assert torch.allclose(median["y"], inits["y"], atol=1e-5)


class AutoLowRankMultivariateNormal_100(AutoLowRankMultivariateNormal):  # noqa: N801 - the anchor's name
    def __init__(self, *args, **kwargs):  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs, rank=100)


@pytest.mark.parametrize("init_scale", [1e-1, 1e-4, 1e-8])
@pytest.mark.parametrize("auto_class", [AutoDiagonalNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal,
                                        AutoLowRankMultivariateNormal_100], ids=name)
def test_init_scale(auto_class, init_scale):
    class M(MonadicProgram):
        def __init__(self):
            super().__init__()
            plate = Plate("plate", size=100)
            self.declare(
                Latent("x", lambda: dist.Normal(0.0, 1.0)),
                Latent("y", lambda: dist.MultivariateNormal(torch.zeros(5), torch.eye(5))),
                Latent("z", lambda: dist.Normal(0.0, 1.0), plate=plate),
            )

    guide = auto_class(M(), init_scale=init_scale)
    guide()
    scale = guide.get_posterior().stddev  # marginal sds (Pyro's _loc_scale)
    scale_rms = float(scale.pow(2).mean().sqrt())
    assert init_scale * 0.5 < scale_rms < 2.0 * init_scale


# ---------------------------------------------------------------------------- models with parameters
class ParamModel(MonadicProgram):
    """``x ~ N(x_loc, x_scale)`` with an ``nn.Parameter`` location and a constrained
    ``Param`` scale (Pyro's ``PyroModule`` with ``PyroParam``); ``y ~ N(2, 0.1)``."""

    def __init__(self, y_plate: int | None = None):
        super().__init__()
        self.x_loc = nn.Parameter(torch.tensor(1.0))
        plate = Plate("plate", size=y_plate) if y_plate else None
        self.declare(
            Param("x_scale", torch.tensor(0.1), dist.constraints.positive),
            Latent("x", lambda x_scale: dist.Normal(self.x_loc, x_scale)),
            Latent("y", lambda: dist.Normal(2.0, 0.1), plate=plate),
        )


@pytest.mark.parametrize("auto_class", [
    AutoDelta, AutoDiagonalNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal, AutoLaplaceApproximation,
    auto_guide_list_x, auto_guide_callable, auto_guide_module_callable,
    functools.partial(AutoDiagonalNormal, init_loc_fn=init_to_mean),
    functools.partial(AutoDiagonalNormal, init_loc_fn=init_to_median),
], ids=_ids)
def test_median_module(auto_class):
    model = ParamModel()
    guide = auto_class(model)
    run_svi(model, guide, steps=20, lr=0.005)
    if auto_class is AutoLaplaceApproximation:
        guide = guide.laplace_approximation()
    median = guide.median()
    assert abs(float(median["x"]) - 1.0) < 0.1
    assert abs(float(median["y"]) - 2.0) < 0.1


def test_nested_autoguide():
    """Adapted: Pyro checks its ``master`` references and param-store prefixes; here the
    nested list trains with ``SVI``, covers every site once, its parameters are the
    parts' (named ``parts.0.`` and ``parts.1.parts.0.``), and its draws replay in the
    model."""
    model = ParamModel(y_plate=2)
    guide = AutoGuideList(model)
    guide.append(AutoDelta(model, observed_names=["y"]))
    inner = AutoGuideList(model)
    inner.append(AutoIAFNormal(model, observed_names=["x"]))
    guide.append(inner)
    run_svi(model, guide, steps=20, lr=0.005)
    assert guide.latent_names == ["x", "y"]
    names = [n for n, _ in guide.named_parameters()]
    assert names and all(n.startswith("parts.0.") or n.startswith("parts.1.parts.0.") for n in names)
    z = guide()
    tr = model.trace(None, z)
    assert {n for n, s in tr.items() if s.kind == "latent"} == {"x", "y"}


# ---------------------------------------------------------------------------- regression
class RandomLinearRegression(MonadicProgram):
    """Pyro's ``LinearRegression`` with a ``RandomLinear`` layer: ``weight ~ N(0, 1)`` of
    shape ``(1, D)``, ``bias ~ N(0, 10)`` of shape ``(1,)``, ``sigma ~ LogNormal(0, 1)``."""

    def __init__(self, n: int, d: int):
        super().__init__()
        plate = Plate("plate", size=n)
        self.declare(
            Latent("weight", lambda: _normal(1, d)),
            Latent("bias", lambda: _normal(1, scale=10.0)),
            Latent("sigma", lambda: dist.LogNormal(0.0, 1.0)),
            Observed("obs", lambda weight, bias, sigma, x: dist.Normal(
                (x * weight[..., 0, :]).sum(-1) + bias[..., 0], sigma), plate=plate),
        )


REGRESSION_GUIDES = [*WITH_DELTA, AutoLaplaceApproximation,
                     functools.partial(AutoDiagonalNormal, init_loc_fn=init_to_mean),
                     functools.partial(AutoDiagonalNormal, init_loc_fn=init_to_median)]


@pytest.mark.parametrize("elbo", ELBOS, ids=name)
@pytest.mark.parametrize("auto_class", REGRESSION_GUIDES, ids=_ids)
def test_linear_regression_smoke(auto_class, elbo):
    n, d = 10, 3
    x, y = torch.randn(n, d), torch.randn(n)
    model = RandomLinearRegression(n, d)
    guide = auto_class(model)
    loss = run_svi(model, guide, {"x": x, "obs": y}, steps=1, lr=0.005, loss=elbo())
    assert math.isfinite(loss[0])


@pytest.mark.parametrize("auto_class", REGRESSION_GUIDES, ids=_ids)
def test_predictive(auto_class):
    """Every stochastic site of the model is in the posterior predictive (Pyro's default
    with a guide), in its own shape; the anchor's ``torch.jit`` round trip is replaced by a
    seeded repeat."""
    n, d = 3, 2
    x, y = torch.randn(n, d), torch.randn(n)
    model = RandomLinearRegression(n, d)
    guide = auto_class(model)
    run_svi(model, guide, {"x": x, "obs": y}, steps=1, lr=0.005)
    if auto_class is AutoLaplaceApproximation:  # its posterior is the Gaussian the training data give
        guide.fit_map({"x": x, "obs": y})
        guide = guide.laplace_approximation({"x": x, "obs": y})
    predictive = Predictive(model, guide=guide, num_samples=10)
    torch.manual_seed(0)
    samples = predictive({"x": x})
    assert {"weight", "bias", "sigma", "obs"} <= set(samples)
    assert samples["weight"].shape == (10, 1, d) and samples["bias"].shape == (10, 1)
    assert samples["sigma"].shape == (10,) and samples["obs"].shape == (10, n)
    torch.manual_seed(0)
    again = predictive({"x": x})
    assert all(torch.equal(again[k], v) for k, v in samples.items())


# ---------------------------------------------------------------------------- subsampling
class SubsampleModel(MonadicProgram):
    """Pyro's ``test_subsample_model``: learnable ``loc`` and ``scale``, and a local latent
    ``sigma`` in the subsampled plate."""

    def __init__(self, full_size: int, batch_size: int):
        super().__init__()
        plate = Plate("batch", size=full_size, subsample_size=batch_size)
        self.declare(
            Param("loc", torch.tensor(0.0)),
            Param("scale", torch.tensor(1.0), dist.constraints.positive),
            Latent("sigma", lambda: dist.LogNormal(0.0, 1.0), plate=plate),
            Observed("obs", lambda loc, scale, sigma, x: dist.Normal(loc + scale * x, sigma), plate=plate),
        )


@pytest.mark.parametrize("auto_class", [AutoDelta, AutoNormal], ids=name)
def test_subsample_model(auto_class):
    full_size, batch_size = 50, 20
    torch.manual_seed(123456789)
    model = SubsampleModel(full_size, batch_size)
    x = torch.randn(full_size)
    y = model.sample({"x": x})["obs"]
    assert y.shape == x.shape
    guide = auto_class(model)
    losses = run_svi(model, guide, {"x": x, "obs": y}, steps=5, lr=0.02)
    assert all(math.isfinite(v) for v in losses)


class EasyGuideModel(MonadicProgram):
    """The model of Pyro's ``easyguide`` tutorial: a drift, then a chain of local states per
    data row over ``T`` steps, each observed through a Bernoulli."""

    def __init__(self, full_size: int = 50, num_time_steps: int = 8):
        super().__init__()
        data = Plate("data", size=full_size)
        steps = [Latent("drift", lambda: dist.LogNormal(-1.0, 0.5))]
        for t in range(num_time_steps):
            prev = [f"state_{t - 1}"] if t else []
            steps.append(Latent(f"state_{t}", step_fn(prev + ["drift"], lambda *a: dist.Normal(
                a[0] if len(a) == 2 else 0.0, a[-1])), plate=data))
            steps.append(Observed(f"obs_{t}", step_fn([f"state_{t}"], lambda z: dist.Bernoulli(logits=z)),
                                  plate=data))
        self.declare(*steps)


@pytest.mark.parametrize("init_fn", [None, init_to_mean, init_to_median], ids=lambda f: name(f) if f else "default")
@pytest.mark.parametrize("auto_class", [AutoDelta, AutoNormal, AutoGuideList], ids=name)
def test_subsample_guide(auto_class, init_fn):
    """Minibatches of rows given with their indices: local latents selected from full-size
    parameters. (NumPyro's ``test_subsample_guide`` runs the same model and shares this port.)"""
    full_size, batch_size, num_time_steps = 50, 20, 8
    model = EasyGuideModel(full_size, num_time_steps)
    torch.manual_seed(123456789)
    prior = model.sample()
    data = torch.stack([prior[f"obs_{t}"] for t in range(num_time_steps)])
    assert data.shape == (num_time_steps, full_size)
    kw = {} if init_fn is None else {"init_loc_fn": init_fn}
    if auto_class is AutoGuideList:
        guide = AutoGuideList(model)
        guide.append(AutoDelta(model, observed_names=[n for n in model.latent_names if n != "drift"], **kw))
        guide.append(AutoNormal(model, observed_names=["drift"], **kw))
    else:
        guide = auto_class(model, **kw)
    optim = torch.optim.Adam(guide.parameters(), lr=0.02)
    svi = SVI(model, guide, optim, Trace_ELBO())
    for _ in range(2):
        for beg in range(0, full_size, batch_size):
            end = min(full_size, beg + batch_size)
            batch = {f"obs_{t}": data[t, beg:end] for t in range(num_time_steps)}
            batch["data"] = torch.arange(beg, end)
            assert math.isfinite(svi.step(batch))


@pytest.mark.parametrize("independent", [True, False], ids=["independent", "dependent"])
@pytest.mark.parametrize("auto_class", [AutoDelta, AutoNormal], ids=name)
def test_subsample_guide_2(auto_class, independent):
    """Two subsampled plates (dims -2 and -1) over one field: the field is sliced along
    each plate's own dim. Adapted: the model gains a latent ``mu`` (a quivers guide needs a
    latent site); the dependent variant passes one index set for both plates, as a data
    loader would."""

    class M(MonadicProgram):
        def __init__(self, size):
            super().__init__()
            k = 5 if independent else None
            origin = Plate("origin", size=size, subsample_size=k, dim=-2)
            destin = Plate("destin", size=size, subsample_size=k, dim=-1)
            self.declare(
                Latent("mu", lambda: dist.Normal(0.0, 1.0)),
                Observed("obs", lambda mu: dist.Normal(mu, 1.0), plate=(origin, destin)),
            )

    data = torch.randn(10, 10)
    model = M(10)
    guide = auto_class(model)
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.01), Trace_ELBO())
    for _ in range(2):
        if independent:
            batch = model.prepare({"obs": data})
            o, d = batch["origin"], batch["destin"]
            assert batch["obs"].shape == (5, 5)
            assert torch.equal(batch["obs"], data[o][:, d])
        else:
            idx = torch.randperm(10)[:5].sort().values
            batch = {"obs": data[idx][:, idx], "origin": idx, "destin": idx}
        b = model.prepare(batch)
        tr = model.trace(b, guide(b))
        assert tr["obs"].scale == pytest.approx(4.0)  # (10 / 5) per plate
        assert math.isfinite(svi.step(batch))
