"""NumPyro's ``test/infer/test_autoguide.py`` (pyro-ppl/numpyro @ 002c6786), ported to quivers.

Same models, data sizes, step counts, learning rates and tolerances, written against
quivers' API; data drawn with torch's generator instead of JAX's keys, so where the
anchor compares with numbers specific to its draws, the port computes the reference
independently (closed form, scikit-learn's MAP, data moments). Each test says what it
adapts; ``docs/conformance.md`` lists every anchor test and its status.
"""

from __future__ import annotations

import math

import pytest
import torch
from anchors import NUMPYRO_FAST_FLOWS_SLOW, name, run_svi
from torch import distributions as dist
from torch import nn
from torch.distributions import biject_to, constraints

from quivers import Deterministic, ImproperUniform, Latent, MonadicProgram, Observed, Param, Plate
from quivers.errors import GuideError, ModelSpecError
from quivers.guides import (
    AutoBNAFNormal,
    AutoDelta,
    AutoDiagonalNormal,
    AutoIAFNormal,
    AutoLaplaceApproximation,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
    init_to_feasible,
    init_to_median,
    init_to_sample,
    init_to_uniform,
    init_to_value,
)
from quivers.infer import Predictive, Trace_ELBO, TraceMeanField_ELBO

init_strategy = init_to_median(num_samples=2)


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # numpyro.enable_x64()
    yield
    torch.set_default_dtype(old)


# ---------------------------------------------------------------------------- beta-bernoulli
class BetaBernoulli(MonadicProgram):
    def __init__(self, n: int):
        super().__init__()
        plate = Plate("N", size=n)
        self.declare(
            Latent("beta", lambda: dist.Independent(dist.Beta(torch.ones(2), torch.ones(2)), 1)),
            Observed("obs", lambda beta: dist.Independent(dist.Bernoulli(beta), 1), plate=plate),
        )


@pytest.mark.parametrize("auto_class", NUMPYRO_FAST_FLOWS_SLOW, ids=name)
def test_beta_bernoulli(auto_class, float64):
    data = torch.tensor([[1.0] * 8 + [0.0] * 2, [1.0] * 4 + [0.0] * 6]).T
    n = len(data)
    model = BetaBernoulli(n)
    guide = auto_class(model, init_loc_fn=init_strategy)
    # the anchor's 3000 steps at lr 0.001 start from its own init draw; Adam moves a parameter by
    # at most ~lr per step, and two uniform draws' median can sit 2.5 logit units below the target
    # with the scales 2.3 units below theirs, which 3000 steps do not cover (measured: mean 0.68 vs
    # 0.75 from this suite's draw, 0.749 after 6000): 6000 steps
    run_svi(model, guide, {"obs": data}, steps=6000, lr=0.001)
    true_coefs = (data.sum(0) + 1) / (n + 2)
    posterior_samples = guide.sample_posterior({"obs": data}, (1000,))
    assert posterior_samples["beta"].shape == (1000, 2)
    mean = posterior_samples["beta"].mean(0)
    if auto_class is AutoDelta:
        # a point mass's mean is the constrained MAP, data.mean(0) under the flat prior, which is
        # 0.05 from the posterior mean 9/12 in the first coordinate: checked against the MAP
        assert torch.allclose(mean, data.mean(0), atol=0.03)
    else:
        assert torch.allclose(mean, true_coefs, atol=0.03)
    quantiles = guide.quantiles([0.2, 0.5, 0.8], {"obs": data})
    assert quantiles["beta"].shape == (3, 2)
    # Predictive can be instantiated from posterior samples...
    predictive = Predictive(model, posterior_samples=posterior_samples)
    assert predictive(None)["obs"].shape == (1000, n, 2)
    # ... or from the guide
    predictive = Predictive(model, guide=guide, num_samples=11)
    assert predictive({"obs": data})["obs"].shape == (11, n, 2)


# ---------------------------------------------------------------------------- logistic regression
class Logistic(MonadicProgram):
    def __init__(self, n: int, dim: int):
        super().__init__()
        plate = Plate("N", size=n)
        self.declare(
            Latent("coefs", lambda: dist.Independent(dist.Normal(torch.zeros(dim), torch.ones(dim)), 1)),
            Observed("obs", lambda coefs, data: dist.Bernoulli(logits=(coefs * data).sum(-1)), plate=plate),
        )


def _logistic_data(n=3000, dim=3):
    g = torch.Generator().manual_seed(0)
    data = torch.randn(n, dim, generator=g)
    true_coefs = torch.arange(1.0, dim + 1.0)
    labels = torch.bernoulli(torch.sigmoid((true_coefs * data).sum(-1)), generator=g)
    return data, labels, true_coefs


def _map_coefs(data, labels):
    """The posterior mode under the N(0, 1) prior: scikit-learn's L2 logistic regression
    with C = 1 minimises exactly the negative log posterior (an independent solver)."""
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(C=1.0, fit_intercept=False, tol=1e-10, max_iter=1000).fit(data.numpy(), labels.numpy())
    return torch.as_tensor(fit.coef_[0], dtype=torch.get_default_dtype())


@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceMeanField_ELBO], ids=name)
@pytest.mark.parametrize("auto_class", NUMPYRO_FAST_FLOWS_SLOW, ids=name)
def test_logistic_regression(auto_class, elbo):
    """The asserting version of the anchor (N = 3000, 2000 steps, lr 0.01, rtol 0.1). The
    posterior mean is compared with the MAP from scikit-learn instead of the anchor's
    numbers for its own draws: with 3000 rows the two differ by O(1/N)."""
    data, labels, true_coefs = _logistic_data()
    batch = {"data": data, "obs": labels}
    model = Logistic(*data.shape)
    guide = auto_class(model, init_loc_fn=init_strategy)
    torch.manual_seed(1)
    run_svi(model, guide, batch, steps=2000, lr=0.01, loss=elbo())
    if auto_class not in (AutoIAFNormal, AutoBNAFNormal):
        median = guide.median(batch)
        assert torch.allclose(median["coefs"], true_coefs, rtol=0.1)
        if auto_class is not AutoDelta:
            quantiles = guide.quantiles([0.2, 0.5], batch)
            assert torch.allclose(quantiles["coefs"][1], true_coefs, rtol=0.1)
    posterior_samples = guide.sample_posterior(batch, (1000,))
    assert torch.allclose(posterior_samples["coefs"].mean(0), _map_coefs(data, labels), rtol=0.1)


def test_mean_field_elbo_uses_the_analytic_kl():
    """The anchor's smoke check that ``TraceMeanField_ELBO`` uses the analytic KL with
    ``AutoNormal``, made exact: with the same seed its loss equals the expected negative
    log-likelihood at the guide's draw plus the closed-form KL(q || prior)."""
    data, labels, _ = _logistic_data(n=100)
    model = Logistic(*data.shape)
    guide = AutoNormal(model)
    batch = {"data": data, "obs": labels}
    torch.manual_seed(3)
    loss = TraceMeanField_ELBO().loss(model, guide, batch)
    torch.manual_seed(3)
    z = guide.rsample(batch)
    nll = -dist.Bernoulli(logits=(z["coefs"] * data).sum(-1)).log_prob(labels).sum()
    q = dist.Normal(guide.locs["coefs"], guide.scales()["coefs"])
    kl = dist.kl_divergence(q, dist.Normal(0.0, 1.0)).sum()
    assert loss == pytest.approx(float(nll + kl), rel=1e-5)
    torch.manual_seed(3)
    assert abs(Trace_ELBO().loss(model, guide, batch) - loss) > 0.0  # the Monte Carlo KL differs


# ---------------------------------------------------------------------------- closed-form summaries
def test_mvn_quantile():
    class M(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Latent("x", lambda: dist.Independent(dist.Normal(torch.zeros(2), 1.0), 1)))

    guide = AutoMultivariateNormal(M())
    with torch.no_grad():
        guide.loc.zero_()
        guide.set_scale_tril(torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    actual = guide.quantiles(0.3)["x"]
    mvn = dist.MultivariateNormal(torch.zeros(2), scale_tril=torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    expected = dist.Normal(torch.zeros(2), mvn.variance.sqrt()).icdf(torch.tensor(0.3))
    assert actual.shape == (2,)  # a scalar quantile adds no dimension
    assert torch.allclose(actual, expected, rtol=1e-5)


class CoefsOffset(MonadicProgram):
    def __init__(self, n: int, dim: int):
        super().__init__()
        plate = Plate("N", size=n)
        self.declare(
            Latent("coefs", lambda: dist.Independent(dist.Normal(torch.zeros(dim), torch.ones(dim)), 1)),
            Latent("offset", lambda: dist.Uniform(-1.0, 1.0)),
            Observed("obs", lambda coefs, offset, data: dist.Bernoulli(logits=offset + (coefs * data).sum(-1)),
                     plate=plate),
        )


def test_iaf():
    """``get_transform`` and ``sample_posterior`` agree with the flow composed by hand:
    the zuko transforms in order, then the final affine map, unpacked, and the offset
    through ``biject_to(interval(-1, 1))``."""
    data, labels, _ = _logistic_data()
    model = CoefsOffset(*data.shape)
    guide = AutoIAFNormal(model)
    run_svi(model, guide, {"data": data, "obs": labels}, steps=1, lr=0.01)
    dim = data.shape[1]
    x = torch.randn(dim + 1)
    with torch.no_grad():
        flows = [t() for t in guide.flows]
        expected_u = x
        for f in flows:
            expected_u = f(expected_u)
        expected_u = guide.loc + torch.nn.functional.softplus(guide.scale_raw) * expected_u
        actual_u = guide.get_transform()(x)
    assert torch.allclose(actual_u, expected_u, atol=1e-6)
    torch.manual_seed(1)
    actual = guide.sample_posterior()
    torch.manual_seed(1)
    eps = guide.get_base_dist().sample()
    with torch.no_grad():
        parts = guide.registry.unpack(guide.get_transform()(eps))
    assert torch.allclose(actual["coefs"], parts["coefs"].reshape(dim), atol=1e-6)
    offset = biject_to(constraints.interval(-1.0, 1.0))(parts["offset"])
    assert torch.allclose(actual["offset"], offset.reshape(()), atol=1e-6)


class UniformNormal(MonadicProgram):
    """``alpha ~ U(0, 1)``, ``loc ~ U(0, alpha)``: a support that moves with ``alpha``."""

    def __init__(self, n: int):
        super().__init__()
        plate = Plate("N", size=n)
        self.declare(
            Latent("alpha", lambda: dist.Uniform(0.0, 1.0)),
            Latent("loc", lambda alpha: dist.Uniform(torch.zeros_like(alpha), alpha)),
            Observed("obs", lambda loc: dist.Normal(loc, 0.1), plate=plate),
        )


def test_uniform_normal():
    """Adapted: the anchor needs ``TransformReparam`` for its dependent support; quivers
    guides map through the support at the current ``alpha`` directly. The posterior of
    ``loc`` is N(mean(data), 0.1^2 / 1000) inside (0, 1), so its median is compared with
    the data's mean (the anchor compares with the generating 0.9, whose distance to the
    mean is data noise)."""
    true_coef = 0.9
    data = true_coef + torch.randn(1000, generator=torch.Generator().manual_seed(0))
    model = UniformNormal(len(data))
    guide = AutoDiagonalNormal(model)
    run_svi(model, guide, {"obs": data}, steps=1000, lr=0.01)
    median = guide.median()
    assert float(median["loc"]) == pytest.approx(float(data.mean()), rel=0.05)
    quantiles = guide.quantiles([0.2, 0.5])
    assert float(quantiles["loc"][1]) == pytest.approx(float(data.mean()), rel=0.1)


def test_param():
    """Params with composed constraints (``greater_than(1)``, ``positive``) keep their
    initial values, and the loss at the initial point is ``log q(x) - log p(x)``."""
    g = torch.Generator().manual_seed(0)
    a_minval = 1.0
    a_init = torch.randn((), generator=g).exp() + a_minval
    b_init = torch.randn((), generator=g).exp()
    x_init = torch.randn((), generator=g)

    class M(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(
                Param("a", a_init, constraints.greater_than(a_minval)),
                Param("b", b_init, constraints.positive),
                Latent("x", lambda a, b: dist.Normal(a, b)),
            )

    model = M()
    guide = AutoDiagonalNormal(model, init_loc_fn=init_to_value(values={"x": x_init}))
    assert torch.allclose(model.param_value("a"), a_init, rtol=1e-6)
    assert torch.allclose(model.param_value("b"), b_init, rtol=1e-6)
    assert torch.allclose(guide.loc, x_init.reshape(1), rtol=1e-6)
    assert torch.allclose(guide.scale, torch.full((1,), guide.init_scale), rtol=1e-6)
    x = {"x": x_init}
    actual_loss = float(guide.log_prob(None, x) - model.log_joint(None, x))
    expected_loss = float(dist.Normal(x_init, guide.init_scale).log_prob(x_init)
                          - dist.Normal(a_init, b_init).log_prob(x_init))
    assert math.isfinite(actual_loss)
    assert actual_loss == pytest.approx(expected_loss, rel=1e-6)


class ExpectedUniformNormal(MonadicProgram):
    """The hand-reparameterised twin: ``loc_base ~ U(0, 1)``, ``loc = alpha * loc_base``."""

    def __init__(self, n: int):
        super().__init__()
        plate = Plate("N", size=n)
        self.declare(
            Latent("alpha", lambda: dist.Uniform(0.0, 1.0)),
            Latent("loc_base", lambda: dist.Uniform(0.0, 1.0)),
            Deterministic("loc", lambda alpha, loc_base: alpha * loc_base),
            Observed("obs", lambda loc: dist.Normal(loc, 0.1), plate=plate),
        )


def test_dynamic_supports():
    """Same parameters, losses and posterior as the hand-reparameterised twin, step by
    step (the anchor compares them after ``svi.init``; here after 200 steps too)."""
    data = 0.9 + torch.randn(1000, generator=torch.Generator().manual_seed(0))
    batch = {"obs": data}
    results = []
    for cls in (UniformNormal, ExpectedUniformNormal):
        torch.manual_seed(1)
        model = cls(len(data))
        guide = AutoDiagonalNormal(model, init_loc_fn=init_to_uniform)
        params0 = {k: v.detach().clone() for k, v in guide.named_parameters()}
        torch.manual_seed(2)
        loss0 = Trace_ELBO(num_particles=10).loss(model, guide, batch)
        torch.manual_seed(3)
        losses = run_svi(model, guide, batch, steps=200, lr=0.01)
        torch.manual_seed(4)
        median = guide.median()
        results.append((params0, loss0, losses, dict(guide.named_parameters()), median))
    (p0a, l0a, la, pa, ma), (p0e, l0e, le, pe, me) = results
    for k in p0a:
        assert torch.allclose(p0a[k], p0e[k]), k
        assert torch.allclose(pa[k], pe[k], atol=1e-5), k
    assert l0a == pytest.approx(l0e, rel=1e-5)
    assert la == pytest.approx(le, rel=1e-4)
    assert torch.allclose(ma["alpha"], me["alpha"], atol=1e-5)
    assert torch.allclose(ma["loc"], me["loc"], atol=1e-5)


# ---------------------------------------------------------------------------- Laplace
class Cubic(MonadicProgram):
    def __init__(self, n: int):
        super().__init__()
        plate = Plate("N", size=n)
        self.declare(
            Latent("a", lambda: dist.Normal(0.0, 10.0)),
            Latent("b", lambda: dist.Independent(dist.Normal(torch.zeros(3), 10.0), 1)),
            Observed("y", lambda a, b, x: dist.Normal(
                a + b[..., 0] * x + b[..., 1] * x**2 + b[..., 2] * x**3, 0.001), plate=plate),
        )


def test_laplace_approximation_warning(float64):
    """Adapted: the anchor expects a warning because its Hessian (noise 0.001, three data
    points, four coefficients: eigenvalues from 1e-2 to ~1e7) defeats a float32 Cholesky.
    That Hessian is positive definite, so quivers accepts it, and since the model is
    linear-Gaussian the Laplace covariance must equal the exact posterior covariance."""
    x = torch.randn(3, generator=torch.Generator().manual_seed(0))
    y = 1 + 2 * x + 3 * x**2 + 4 * x**3
    batch = {"x": x, "y": y}
    guide = AutoLaplaceApproximation(Cubic(3))
    guide.fit_map(batch)
    lap = guide.laplace_approximation(batch)
    design = torch.stack([torch.ones_like(x), x, x**2, x**3], -1)
    precision = design.T @ design / 0.001**2 + torch.eye(4) / 100.0
    exact = torch.linalg.inv(precision)
    cov = lap.get_posterior().covariance_matrix
    assert torch.allclose(cov, exact, rtol=1e-6, atol=1e-12)
    samples = guide.sample_posterior(batch, (10,))  # the anchor's call: draws from the Gaussian
    assert samples["b"].shape == (10, 3) and samples["b"].std(0).min() > 0


class Line(MonadicProgram):
    def __init__(self, n: int):
        super().__init__()
        plate = Plate("N", size=n)
        self.declare(
            Latent("a", lambda: dist.Normal(0.0, 10.0)),
            Latent("b", lambda: dist.Normal(0.0, 10.0)),
            Observed("y", lambda a, b, x: dist.Normal(a + b * x, 1.0), plate=plate),
        )


def test_laplace_approximation_custom_hessian():
    x = torch.randn(100, generator=torch.Generator().manual_seed(0))
    batch = {"x": x, "y": 1 + 2 * x}
    guide = AutoLaplaceApproximation(Line(100), hessian_fn=lambda f, u: torch.func.jacfwd(torch.func.jacrev(f))(u))
    run_svi(guide.model, guide, batch, steps=2000, lr=0.1)
    t = guide.get_transform(batch)
    default = AutoLaplaceApproximation(guide.model)
    default.load_state_dict(guide.state_dict())
    assert torch.allclose(t.scale_tril, default.get_transform(batch).scale_tril, rtol=1e-4)


def test_improper():
    """Smoke in the anchor (10,000 steps); here also checked against the data's moments:
    ``mu = lambda1 + lambda2`` and ``sigma`` are identified, with flat priors, by the mean
    and sd of 100 draws (posterior sds ~0.1 and ~0.07)."""
    y = torch.randn(100, generator=torch.Generator().manual_seed(0))

    class M(MonadicProgram):
        def __init__(self):
            super().__init__()
            plate = Plate("N", size=100)
            self.declare(
                Latent("lambda1", lambda: ImproperUniform(constraints.real)),
                Latent("lambda2", lambda: ImproperUniform(constraints.real)),
                Latent("sigma", lambda: ImproperUniform(constraints.positive)),
                Deterministic("mu", lambda lambda1, lambda2: lambda1 + lambda2),
                Observed("y", lambda mu, sigma: dist.Normal(mu, sigma), plate=plate),
            )

    model = M()
    guide = AutoDiagonalNormal(model)
    losses = run_svi(model, guide, {"y": y}, steps=10000, lr=0.003)
    assert all(math.isfinite(v) for v in losses[-100:])
    median = guide.median()
    # 0.35 and 0.25: a few posterior sds plus the diagonal guide's bias on the unidentified pair
    assert abs(float(median["mu"]) - float(y.mean())) < 0.35
    assert abs(float(median["sigma"]) - float(y.std())) < 0.25


def test_module():
    """A network inside the model trains with the guide (``numpyro.module``'s role)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(100, 10, generator=g), torch.randn(100, generator=g)

    class M(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.nn = nn.Linear(10, 1)
            plate = Plate("N", size=100)
            self.declare(
                Latent("sigma", lambda: dist.HalfNormal(1.0)),
                Observed("y", lambda sigma, x: dist.Normal(self.nn(x).squeeze(-1), sigma), plate=plate),
            )

    model = M()
    before = model.nn.weight.detach().clone()
    guide = AutoDiagonalNormal(model)
    losses = run_svi(model, guide, {"x": x, "y": y}, steps=1000, lr=0.003)
    assert all(math.isfinite(v) for v in losses)
    assert not torch.allclose(model.nn.weight, before)


# ---------------------------------------------------------------------------- deterministic sites
class DeterministicModel(MonadicProgram):
    """``mu ~ N(0, 5)``, a learnable ``sigma``, ``y ~ N(mu, sigma)`` in a plate sized by the
    data, and ``z = (y - mu) / sigma``, a deterministic site of the observed values."""

    def __init__(self):
        super().__init__()
        plate = Plate("N")
        self.declare(
            Latent("mu", lambda: dist.Normal(0.0, 5.0)),
            Param("sigma", torch.tensor(1.0), constraints.positive),
            Observed("y", lambda mu, sigma: dist.Normal(mu, sigma), plate=plate),
            Deterministic("z", lambda y, mu, sigma: (y - mu) / sigma, plate=plate),
        )


@pytest.mark.parametrize("auto_class", [AutoDiagonalNormal, AutoMultivariateNormal, AutoLaplaceApproximation,
                                        AutoLowRankMultivariateNormal, AutoNormal, AutoDelta], ids=name)
def test_autoguide_deterministic(auto_class):
    mu, sigma = 2.0, 3.0
    y = mu + sigma * torch.randn(300, generator=torch.Generator().manual_seed(0))
    y_train, y_test = y[:200], y[200:]
    model = DeterministicModel()
    guide = auto_class(model)
    run_svi(model, guide, {"y": y_train}, steps=500, lr=0.01)
    posterior_samples = guide.sample_posterior({"y": y_train}, (1000,))
    predictive = Predictive(model, posterior_samples=posterior_samples)
    samples = predictive({"y": y_test})
    assert samples["y"].shape == (1000, 100)  # the test rows, not the training rows
    assert samples["z"].shape == (1000, 100)
    expected = (samples["y"] - posterior_samples["mu"][..., None]) / model.param_value("sigma")
    assert torch.allclose(samples["z"], expected, atol=0.05)


@pytest.mark.parametrize("size,dim", [(10, -2), (5, -1)])
def test_plate_inconsistent(size, dim):
    class M(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(
                Latent("x", lambda: dist.Normal(0.0, 1.0), plate=Plate("a", 10, dim=-1)),
                Latent("y", lambda: dist.Normal(0.0, 1.0), plate=Plate("a", size, dim=dim)),
            )

    with pytest.raises(ModelSpecError, match="two different plates are named 'a'"):
        M()


@pytest.mark.parametrize("init_loc_fn", [init_to_feasible, init_to_median, init_to_sample, init_to_uniform],
                         ids=name)
@pytest.mark.parametrize("auto_class", [AutoDelta, AutoDiagonalNormal, AutoMultivariateNormal, AutoNormal,
                                        AutoLowRankMultivariateNormal, AutoLaplaceApproximation], ids=name)
def test_discrete_helpful_error(auto_class, init_loc_fn):
    class M(MonadicProgram):
        def __init__(self):
            super().__init__()
            plate = Plate("N", size=2)
            self.declare(
                Latent("p", lambda: dist.Beta(2.0, 2.0)),
                Latent("x", lambda p: dist.Bernoulli(p)),
                Observed("obs", lambda p, x: dist.Bernoulli(p * x + (1 - p) * (1 - x)), plate=plate),
            )

    with pytest.raises(GuideError, match="'x' has discrete support"):
        auto_class(M(), init_loc_fn=init_loc_fn)


def test_subsample_model_with_deterministic():
    class M(MonadicProgram):
        def __init__(self):
            super().__init__()
            plate = Plate("N", size=10, subsample_size=5)
            self.declare(
                Latent("x", lambda: dist.Normal(0.0, 1.0)),
                Deterministic("x2", lambda x: x * 2),
                Observed("obs", lambda x: dist.Normal(x, 1.0), plate=plate),
            )

    model = M()
    guide = AutoNormal(model)
    run_svi(model, guide, {"obs": torch.ones(10)}, steps=10, lr=1.0)
    samples = guide.sample_posterior()
    assert "x2" in samples and torch.allclose(samples["x2"], 2 * samples["x"])


def test_autocontinuous_local_error():
    class M(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Latent("x", lambda: dist.Normal(0.0, 1.0), plate=Plate("N", 10, subsample_size=4)))

    with pytest.raises(GuideError, match="local latent variables"):
        AutoDiagonalNormal(M())


def test_init_to_scalar_value():
    class M(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Latent("x", lambda: dist.Normal(0.0, 1.0)))

    model = M()
    guide = AutoDiagonalNormal(model, init_loc_fn=init_to_value(values={"x": 1.0}))
    assert float(guide.median()["x"]) == pytest.approx(1.0)
    run_svi(model, guide, steps=1, lr=1.0)


def test_autodelta_capture_deterministic_variables():
    class M(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Latent("x", lambda: dist.Normal(0.0, 1.0)), Deterministic("x2", lambda x: x**2))

    model = M()
    guide = AutoDelta(model)
    run_svi(model, guide, steps=1000, lr=0.01)
    samples = guide.sample_posterior()
    assert "x2" in samples


@pytest.mark.parametrize("shape", [(), (1,), (2, 3)])
@pytest.mark.parametrize("sample_shape", [(), (1,), (2, 3)])
def test_autodelta_sample_posterior_with_sample_shape(shape, sample_shape):
    """Adapted: a batch shape outside any plate is an event shape in quivers
    (``Independent``)."""

    class M(MonadicProgram):
        def __init__(self):
            super().__init__()
            prior = dist.Independent(dist.Normal(torch.zeros(shape), 1.0), len(shape)) if shape else \
                dist.Normal(0.0, 1.0)
            self.declare(Latent("x", lambda: prior), Deterministic("x2", lambda x: x**2))

    model = M()
    guide = AutoDelta(model)
    run_svi(model, guide, steps=1000, lr=0.01)
    samples = guide.sample_posterior(None, sample_shape)
    assert samples["x"].shape == sample_shape + shape
    assert samples["x2"].shape == sample_shape + shape
