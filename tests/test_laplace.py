"""AutoLaplaceApproximation: inside AutoGuideList, eigenvalue corrections, ill-conditioned
Hessians, get_transform, and posterior draws from the Laplace Gaussian."""

import math

import pytest
import torch
from torch import distributions as dist

from quivers import Latent, MonadicProgram, Observed, Plate
from quivers.errors import GuideError
from quivers.guides import AutoGuideList, AutoLaplaceApproximation, AutoNormalGuide
from quivers.guides.transforms import LowerCholeskyAffine


class Chain(MonadicProgram):
    """x ~ N(0, 1), y ~ N(x, 1), obs ~ N(y, 1): every conditional is Gaussian."""

    def __init__(self):
        super().__init__()
        self.declare(
            Latent("x", lambda: dist.Normal(0.0, 1.0)),
            Latent("y", lambda x: dist.Normal(x, 1.0)),
            Observed("obs", lambda y: dist.Normal(y, 1.0)),
        )


def test_laplace_inside_a_guide_list_conditions_on_the_other_parts_medians():
    """The Hessian in x given y = v: precision 1 (prior) + 1 (y | x) = 2, so the Laplace
    quantiles are loc + Phi^-1(q) / sqrt(2), whatever the loc."""
    model = Chain()
    lap = AutoLaplaceApproximation(model, observed_names=["y"])
    guide = AutoGuideList(model, [lap, AutoNormalGuide(model, observed_names=["x"])])
    with torch.no_grad():
        lap.loc.fill_(0.35)
        guide[1].locs["y"].fill_(0.7)
    batch = {"obs": torch.tensor(1.0)}
    q = guide.quantiles([0.1, 0.5, 0.9], batch)["x"]
    want = 0.35 + torch.special.ndtri(torch.tensor([0.1, 0.5, 0.9])) / math.sqrt(2.0)
    assert torch.allclose(q, want, atol=1e-5)
    draws = guide.sample_posterior(batch, (20000,))
    # 20k draws: the sd's standard error is 0.005 * 0.707
    assert float(draws["x"].std()) == pytest.approx(1 / math.sqrt(2.0), abs=0.02)
    with pytest.raises(GuideError, match="conditions on the other latent sites \\['y'\\]"):
        lap.laplace_approximation(batch)  # alone, it must be told y
    assert lap.laplace_approximation({**batch, "y": torch.tensor(0.7)}).get_posterior().variance.item() == \
        pytest.approx(0.5, rel=1e-5)


class One(MonadicProgram):
    def __init__(self, d=2):
        super().__init__()
        self.declare(Latent("z", lambda: dist.Independent(dist.Normal(torch.zeros(d), 1.0), 1)))


def _with_hessian(h, **kw):
    return AutoLaplaceApproximation(One(h.shape[0]), hessian_fn=lambda f, u: h, **kw)


def test_jitter_raises_small_eigenvalues_and_never_lowers_any():
    h = torch.diag(torch.tensor([-1.0, 4.0]))
    with pytest.raises(GuideError, match="smallest eigenvalue -1"):
        _with_hessian(h).laplace_approximation()
    with pytest.warns(UserWarning, match="1 eigenvalue\\(s\\) raised to 0.5"):
        cov = _with_hessian(h, on_indefinite="jitter", jitter=0.5).laplace_approximation().get_posterior()
    assert torch.allclose(cov.covariance_matrix, torch.diag(torch.tensor([2.0, 0.25])), rtol=1e-5)


def test_an_ill_conditioned_positive_definite_hessian_is_a_mode():
    """Eigenvalues 3e-4 and 1e4 in a rotated basis, stored in float32: the stored matrix is
    positive definite (eigenvalues 1.6e-4 and 1e4 in float64) but float32's Cholesky fails
    on it. The point is a mode, so its covariance is the inverse, under either policy."""
    c, s = math.cos(0.9593219757080078), math.sin(0.9593219757080078)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    h = (rot @ torch.diag(torch.tensor([3e-4, 1e4], dtype=torch.float64)) @ rot.T).float()
    assert int(torch.linalg.cholesky_ex(h)[1]) != 0 and float(torch.linalg.eigvalsh(h.double())[0]) > 0
    want = torch.linalg.inv(h.double())
    for policy in ("raise", "jitter"):
        cov = _with_hessian(h, on_indefinite=policy).laplace_approximation().get_posterior().covariance_matrix
        # the guide keeps a float32 factor: entries of ~6e3 agree to float32 rounding
        assert torch.allclose(cov.double(), want, rtol=1e-4, atol=1e-2)


def test_non_finite_hessian_is_a_clear_error():
    with pytest.raises(GuideError, match="not finite"):
        _with_hessian(torch.tensor([[float("nan"), 0.0], [0.0, 1.0]])).laplace_approximation()


class Regression(MonadicProgram):
    def __init__(self):
        super().__init__()
        data = Plate("data", size=20)
        self.declare(
            Latent("b", lambda: dist.Independent(dist.Normal(torch.zeros(2), 3.0), 1)),
            Observed("y", lambda b, x: dist.Normal((b * x).sum(-1), 0.5), plate=data),
        )


def _regression():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 2, generator=g)
    y = x @ torch.tensor([1.0, -2.0]) + 0.5 * torch.randn(20, generator=g)
    precision = x.T @ x / 0.25 + torch.eye(2) / 9.0
    return {"x": x, "y": y}, torch.linalg.inv(precision)


def test_get_transform_and_draws_are_the_laplace_gaussian():
    """A linear-Gaussian model: the Laplace Gaussian is the exact posterior."""
    batch, exact = _regression()
    guide = AutoLaplaceApproximation(Regression())
    guide.fit_map(batch)
    t = guide.get_transform(batch)
    assert isinstance(t, LowerCholeskyAffine)
    assert torch.allclose(t.scale_tril @ t.scale_tril.T, exact, rtol=1e-4, atol=1e-7)
    torch.manual_seed(1)
    draws = guide.sample_posterior(batch, (40000,))["b"]
    # 40k draws: the relative standard error of a variance is sqrt(2 / 40000) ~ 0.7%
    assert torch.allclose(torch.cov(draws.T), exact, rtol=0.05, atol=1e-5)
    point = guide.median(batch)["b"]  # the median is the point, without the Hessian
    assert torch.allclose(point, guide.loc)
    with pytest.raises(GuideError, match="needs the data"):
        guide.sample_posterior({"x": batch["x"]}, (3,))
