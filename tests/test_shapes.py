"""Shapes: every kind of site, with 1 and 8 particles, gives finite losses and gradients
and values of shape sample_shape + batch_shape + event_shape."""

import pytest
import torch
from torch import distributions as dist

from quivers import Deterministic, Factor, Latent, MonadicProgram, Observed, Param, Plate
from quivers.guides import AutoDeltaGuide, AutoNormalGuide
from quivers.infer import Trace_ELBO


class Scalar(MonadicProgram):
    def __init__(self):
        super().__init__()
        self.declare(Latent("a", lambda: dist.Normal(0.0, 1.0)), Observed("y", lambda a: dist.Normal(a, 1.0)))

    batch = {"y": torch.tensor(0.5)}
    shapes = {"a": ()}


class Vector(MonadicProgram):
    def __init__(self):
        super().__init__()
        data = Plate("data", size=6)
        self.declare(
            Latent("w", lambda: dist.Independent(dist.Normal(torch.zeros(3), 1.0), 1)),
            Latent("sigma", lambda: dist.HalfNormal(1.0)),
            Observed("y", lambda w, sigma, x: dist.Normal((x * w).sum(-1), sigma), plate=data),
        )

    batch = {"y": torch.randn(6), "x": torch.randn(6, 3)}
    shapes = {"w": (1, 3), "sigma": (1,)}


class Plated(MonadicProgram):
    def __init__(self):
        super().__init__()
        s = Plate("schools", size=8)
        self.register_buffer("sigma", torch.full((8,), 10.0))
        self.declare(
            Latent("mu", lambda: dist.Normal(0.0, 5.0)),
            Latent("tau", lambda: dist.HalfCauchy(5.0)),
            Latent("eta", lambda: dist.Normal(0.0, 1.0), plate=s),
            Deterministic("theta", lambda mu, tau, eta: mu + tau * eta),
            Observed("y", lambda theta: dist.Normal(theta, self.sigma), plate=s),
        )

    batch = {"y": torch.randn(8) * 10}
    shapes = {"mu": (1,), "tau": (1,), "eta": (8,)}


class Nested(MonadicProgram):
    def __init__(self):
        super().__init__()
        groups = Plate("groups", size=3, dim=-2)
        obs = Plate("obs", size=4, dim=-1)
        self.declare(
            Latent("mu", lambda: dist.Normal(0.0, 1.0), plate=groups),
            Latent("s", lambda: dist.LogNormal(0.0, 1.0), plate=obs),
            Factor("penalty", lambda mu: -0.5 * mu.square(), plate=groups),
            Observed("y", lambda mu, s: dist.Normal(mu, s), plate=(groups, obs)),
        )

    batch = {"y": torch.randn(3, 4)}
    shapes = {"mu": (3, 1), "s": (1, 4)}


class Simplex(MonadicProgram):
    def __init__(self):
        super().__init__()
        data = Plate("data", size=10)
        self.declare(
            Latent("p", lambda: dist.Dirichlet(torch.ones(3))),
            Observed("y", lambda p: dist.Categorical(p), plate=data),
        )

    batch = {"y": torch.randint(0, 3, (10,))}
    shapes = {"p": (1, 3)}


class Cholesky(MonadicProgram):
    def __init__(self):
        super().__init__()
        data = Plate("data", size=10)
        self.declare(
            Latent("L", lambda: dist.LKJCholesky(3, 2.0)),
            Observed("y", lambda L: dist.MultivariateNormal(torch.zeros(3), scale_tril=L), plate=data),
        )

    batch = {"y": torch.randn(10, 3)}
    shapes = {"L": (1, 3, 3)}


class PartiallyObserved(MonadicProgram):
    def __init__(self):
        super().__init__()
        data = Plate("data", size=5)
        mask = torch.tensor([True, False, True, True, False])
        self.declare(
            Latent("m", lambda: dist.Normal(0.0, 1.0)),
            Param("s", torch.tensor(1.0), dist.constraints.positive),
            Observed("y", lambda m, s: dist.Normal(m, s), plate=data, obs_mask=mask),
        )

    batch = {"y": torch.tensor([0.1, float("nan"), -0.3, 0.7, float("nan")])}
    shapes = {"m": (1,), "y_unobserved": (5,)}


MODELS = [Scalar, Vector, Plated, Nested, Simplex, Cholesky, PartiallyObserved]


@pytest.mark.parametrize("guide_cls", [AutoNormalGuide, AutoDeltaGuide])
@pytest.mark.parametrize("num_particles", [1, 8])
@pytest.mark.parametrize("model_cls", MODELS, ids=lambda c: c.__name__)
def test_shapes_loss_and_gradients(model_cls, num_particles, guide_cls):
    model = model_cls()
    guide = guide_cls(model)
    z = guide.rsample(model_cls.batch, (num_particles,))
    assert set(z) == set(model_cls.shapes)
    for name, shape in model_cls.shapes.items():
        assert z[name].shape == (num_particles, *shape), name
    assert guide.log_prob(model_cls.batch, z).shape == (num_particles,)
    tr = model.trace(model_cls.batch, z)
    assert tr.log_joint().shape == (num_particles,)
    loss = Trace_ELBO(num_particles=num_particles)(model, guide, model_cls.batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    params = list(guide.parameters()) + list(model.parameters())
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_partially_observed_uses_imputed_values_only_where_masked():
    model = PartiallyObserved()
    guide = AutoNormalGuide(model)
    z = guide.rsample(PartiallyObserved.batch, (2,))
    y = model.trace(PartiallyObserved.batch, z)["y"].value
    assert torch.equal(y[:, 0], torch.full((2,), 0.1))
    assert torch.equal(y[:, 1], z["y_unobserved"][:, 1])


def test_prior_sample_shapes_match_design_example():
    # DESIGN.md: inside traces, with 16 particles mu and tau are (16, 1), eta and theta (16, 8);
    # what users read back (model.sample) has each site's own shape: mu (16,)
    model = Plated()
    tr = model.trace(None, {}, (16,), sample_latent=True, sample_observed=True)
    assert tr["mu"].value.shape == (16, 1) and tr["tau"].value.shape == (16, 1)
    assert tr["eta"].value.shape == (16, 8) and tr["theta"].value.shape == (16, 8) and tr["y"].value.shape == (16, 8)
    s = model.sample(sample_shape=(16,))
    assert s["mu"].shape == (16,) and s["tau"].shape == (16,)
    assert s["eta"].shape == (16, 8) and s["theta"].shape == (16, 8) and s["y"].shape == (16, 8)


def test_regression_weights_shape_design_example():
    # DESIGN.md: w of event shape (D,) outside a data plate has shape (16, 1, D)
    model = Vector()
    guide = AutoNormalGuide(model)
    w = guide.rsample(Vector.batch, (16,))["w"]
    assert w.shape == (16, 1, 3)
    assert (Vector.batch["x"] * w).sum(-1).shape == (16, 6)


def test_non_vectorized_particles_agree_in_shape():
    model = Plated()
    guide = AutoNormalGuide(model)
    loss = Trace_ELBO(num_particles=3, vectorize_particles=False)(model, guide, Plated.batch)
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_masked_batch_already_sliced_by_indices_is_validated_on_its_slice():
    class Masked(MonadicProgram):
        def __init__(self):
            super().__init__()
            data = Plate("data", size=5, subsample_size=2)
            mask = torch.tensor([True, False, True, True, False])
            self.declare(
                Latent("m", lambda: dist.Normal(0.0, 1.0)),
                Observed("y", lambda m: dist.Normal(m, 1.0), plate=data, obs_mask=mask),
            )

    model = Masked()
    # rows 1 and 4 are the masked ones: their NaN placeholders must be accepted
    batch = model.prepare({"y": torch.tensor([float("nan"), float("nan")]), "data": torch.tensor([1, 4])})
    guide = AutoNormalGuide(model)
    assert torch.isfinite(Trace_ELBO()(model, guide, batch))
