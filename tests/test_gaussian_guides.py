"""The Gaussian guide family against closed-form posteriors, and its API."""

from __future__ import annotations

import pytest
import torch
from helpers import LocalNormal, NormalNormal, fit
from torch import distributions as dist

from quivers import Latent, MonadicProgram, Observed, Plate
from quivers.errors import GuideError
from quivers.guides import (
    AutoBatchedMultivariateNormal,
    AutoDiagonalNormal,
    AutoLaplaceApproximation,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormalGuide,
)
from quivers.infer import SVI, Trace_ELBO

FLAT = [AutoDiagonalNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal]


class Tree(MonadicProgram):
    """Two-level Normal tree: g ~ N(0, 2); z_j ~ N(g, 1), j < J; y_jk ~ N(z_j, 1), k < K.

    Every site is Gaussian and linear in its parents, so the posterior is Gaussian with
    correlations between g and every z_j (closed form below)."""

    def __init__(self, J=3, K=4):
        super().__init__()
        self.J, self.K = J, K
        groups = Plate("groups", size=J, dim=-2)
        obs = Plate("obs", size=K, dim=-1)
        self.declare(
            Latent("g", lambda: dist.Normal(0.0, 2.0)),
            Latent("z", lambda g: dist.Normal(g, 1.0), plate=groups),
            Observed("y", lambda z: dist.Normal(z, 1.0), plate=(groups, obs)),
        )

    def posterior(self, y):
        """Mean and covariance of (g, z_1..z_J) given y (shape (J, K))."""
        J, K = self.J, self.K
        # joint Gaussian of (g, z, y_flat), then condition on y
        n = 1 + J + J * K
        A = torch.zeros(n, n, dtype=torch.float64)  # x = A eps, eps ~ N(0, I)
        A[0, 0] = 2.0
        for j in range(J):
            A[1 + j] = A[0]
            A[1 + j, 1 + j] = 1.0
            for k in range(K):
                r = 1 + J + j * K + k
                A[r] = A[1 + j]
                A[r, r] = 1.0
        cov = A @ A.T
        a, b = slice(0, 1 + J), slice(1 + J, n)
        gain = cov[a, b] @ torch.linalg.inv(cov[b, b])
        mean = gain @ y.double().reshape(-1)
        return mean, cov[a, a] - gain @ cov[b, a]


class Collinear(MonadicProgram):
    """y ~ N(b1 x1 + b2 x2, 0.5) with x2 = x1 + small noise: b ~ N(0, 1) has a strongly
    negatively correlated posterior (known sigma: closed form)."""

    def __init__(self, n):
        super().__init__()
        data = Plate("data", size=n)
        self.declare(
            Latent("b", lambda: dist.Independent(dist.Normal(torch.zeros(2), 1.0), 1)),
            Observed("y", lambda b, x: dist.Normal((x * b).sum(-1), 0.5), plate=data),
        )

    @staticmethod
    def posterior(x, y):
        prec = torch.eye(2, dtype=torch.float64) + x.double().T @ x.double() / 0.25
        cov = torch.linalg.inv(prec)
        return cov @ (x.double().T @ y.double()) / 0.25, cov


def _flat_mean_cov(guide):
    q = guide.get_posterior()
    return q.mean.detach(), q.covariance_matrix.detach() if hasattr(q, "covariance_matrix") else torch.diag(
        q.variance.detach())


@pytest.mark.parametrize("cls", FLAT + [AutoNormalGuide])
def test_global_normal_normal(cls):
    torch.manual_seed(0)
    y = 1.0 + torch.randn(20)
    model = NormalNormal(20)
    guide = cls(model)
    fit(model, guide, {"y": y})
    mean, sd = model.posterior(y)
    draws = guide.sample_posterior({"y": y}, (20000,))["z"]
    # posterior sd 0.22: 0.05 is 0.23 sd; Monte Carlo error of 20k draws is 0.0016 on the
    # mean and 0.5% on the sd, so the tolerances measure the fit
    assert abs(float(draws.mean()) - mean) < 0.05
    assert abs(float(draws.std()) / sd - 1) < 0.05


@pytest.mark.parametrize("cls", FLAT)
def test_batched_local_normal(cls):
    torch.manual_seed(1)
    model = LocalNormal(6)
    y = torch.randn(6) * 2
    guide = cls(model)
    fit(model, guide, {"y": y})
    mean, sd = y / 2, 0.5**0.5  # z_i | y_i ~ N(y_i / 2, 1/2)
    draws = guide.sample_posterior({"y": y}, (20000,))["z"]
    assert (draws.mean(0) - mean).abs().max() < 0.05
    assert ((draws.std(0) / sd) - 1).abs().max() < 0.05


@pytest.mark.parametrize("cls", [AutoMultivariateNormal, AutoLowRankMultivariateNormal])
def test_two_level_tree_full_posterior(cls):
    torch.manual_seed(2)
    model = Tree()
    y = torch.randn(3, 4) + torch.tensor([[-1.0], [0.0], [2.0]])
    guide = cls(model, rank=3) if cls is AutoLowRankMultivariateNormal else cls(model)  # rank D-1: exact family
    fit(model, guide, {"y": y}, steps=2500)
    mean, cov = model.posterior(y)
    q_mean, q_cov = _flat_mean_cov(guide)
    # flat order is (g, z_1..z_J); tolerances as the global test (sds are 0.4 to 1.0)
    assert (q_mean.double() - mean).abs().max() < 0.05
    assert ((q_cov.diagonal().double().sqrt() / cov.diagonal().sqrt()) - 1).abs().max() < 0.05
    corr = lambda c: c / torch.outer(c.diagonal().sqrt(), c.diagonal().sqrt())  # noqa: E731
    assert (corr(q_cov.double()) - corr(cov)).abs().max() < 0.05


def test_collinear_regression_correlation():
    torch.manual_seed(3)
    n = 30
    x1 = torch.randn(n)
    x = torch.stack([x1, x1 + 0.3 * torch.randn(n)], -1)
    y = x @ torch.tensor([1.0, -0.5]) + 0.5 * torch.randn(n)
    model = Collinear(n)
    mean, cov = model.posterior(x, y)
    rho = float(cov[0, 1] / cov.diagonal().sqrt().prod())
    assert rho < -0.8  # the test is meaningful: strongly correlated posterior
    got = {}
    for cls in [AutoMultivariateNormal, AutoLowRankMultivariateNormal, AutoDiagonalNormal]:
        guide = cls(model)
        fit(model, guide, {"y": y, "x": x}, steps=2500)
        _, q_cov = _flat_mean_cov(guide)
        got[cls.__name__] = float(q_cov[0, 1] / q_cov.diagonal().sqrt().prod())
    # full-rank and rank-1 (+ diagonal) families contain the exact posterior: within 0.05
    assert abs(got["AutoMultivariateNormal"] - rho) < 0.05
    assert abs(got["AutoLowRankMultivariateNormal"] - rho) < 0.05
    assert got["AutoDiagonalNormal"] == 0.0  # mean-field cannot represent it


def _fit_map(guide, model, batch, steps=3000):
    optim = torch.optim.Adam(guide.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.ExponentialLR(optim, gamma=0.001 ** (1 / steps))
    svi = SVI(model, guide, optim, Trace_ELBO())
    for _ in range(steps):
        svi.step(batch)
        sched.step()


def test_laplace_on_gaussian_model_is_exact():
    torch.manual_seed(4)
    n = 30
    x = torch.randn(n, 2)
    y = x @ torch.tensor([1.0, -0.5]) + 0.5 * torch.randn(n)
    model = Collinear(n)
    guide = AutoLaplaceApproximation(model)
    _fit_map(guide, model, {"x": x, "y": y})
    mean, cov = model.posterior(x, y)
    lap = guide.laplace_approximation({"x": x, "y": y})
    q = lap.get_posterior()
    # the log joint is quadratic: the mode is the mean and H^-1 the covariance exactly; the
    # remaining error is the optimiser's (deterministic gradients, decayed lr) and float32
    assert torch.allclose(q.mean.double(), mean, atol=1e-3)
    assert torch.allclose(q.covariance_matrix.double(), cov, rtol=1e-3, atol=1e-6)
    assert torch.allclose(guide.median()["b"].double(), mean, atol=1e-3)


class PoissonRate(MonadicProgram):
    """rate ~ Gamma(2, 1); y_i ~ Poisson(rate): non-Gaussian, positive support."""

    def __init__(self, n):
        super().__init__()
        self.declare(
            Latent("rate", lambda: dist.Gamma(2.0, 1.0)),
            Latent("w", lambda: dist.Normal(0.0, 1.0)),
            Observed("y", lambda rate, w: dist.Poisson(rate * torch.exp(0.1 * w)), plate=Plate("data", size=n)),
        )


def test_laplace_covariance_is_inverse_autograd_hessian():
    torch.manual_seed(5)
    y = torch.poisson(torch.full((15,), 3.0))
    model = PoissonRate(15)
    guide = AutoLaplaceApproximation(model)
    _fit_map(guide, model, {"y": y})
    u0 = guide.loc.detach().clone()

    def neg_log_density(u):  # written out by hand: log p(y, exp(u0), u1) + u0 (Jacobian of exp)
        rate, w = u[0].exp(), u[1]
        lp = dist.Gamma(2.0, 1.0).log_prob(rate) + u[0] + dist.Normal(0.0, 1.0).log_prob(w)
        return -(lp + dist.Poisson(rate * torch.exp(0.1 * w)).log_prob(y).sum())

    h = torch.func.hessian(neg_log_density)(u0)
    want = torch.linalg.inv(h)
    got = guide.laplace_approximation({"y": y}).get_posterior().covariance_matrix
    # the same Hessian by two routes (float32 arithmetic): agreement to float32 accuracy
    assert torch.allclose(got.double(), want.double(), rtol=1e-4, atol=1e-7)


def test_laplace_indefinite_hessian_raises_or_jitters():
    model = NormalNormal(3)
    y = torch.zeros(3)
    flip = lambda f, u: -torch.autograd.functional.hessian(f, u)  # noqa: E731 - a negative definite "Hessian"
    with pytest.raises(GuideError, match="not positive definite"):
        AutoLaplaceApproximation(model, hessian_fn=flip).laplace_approximation({"y": y})
    guide = AutoLaplaceApproximation(model, hessian_fn=flip, on_indefinite="jitter", jitter=1e-2)
    with pytest.warns(UserWarning, match="raised to"):
        lap = guide.laplace_approximation({"y": y})
    assert torch.allclose(lap.get_posterior().covariance_matrix, torch.tensor([[100.0]]), rtol=1e-4)


@pytest.mark.parametrize("cls", FLAT)
def test_quantiles_and_median_agree_with_get_posterior(cls):
    torch.manual_seed(6)
    model = Collinear(5)
    guide = cls(model)
    with torch.no_grad():
        guide.loc.copy_(torch.tensor([0.3, -1.2]))
        guide.scale_raw.add_(torch.tensor([0.5, -0.2]))
    q = guide.get_posterior()
    probs = torch.tensor([0.05, 0.5, 0.95])
    want = dist.Normal(q.mean, q.stddev).icdf(probs[:, None])  # real support: marginals are Normal
    got = guide.quantiles(probs)["b"]  # (3,) + the site's event_shape (2,): no plate dims
    assert got.shape == (3, 2)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(guide.median()["b"], q.mean, atol=1e-6)
    draws = guide.sample_posterior(sample_shape=(40000,))["b"]
    # 40k draws: the sampling error of the 5% quantile is below 0.01 sd
    assert torch.allclose(torch.quantile(draws, probs, dim=0), want, atol=0.03)


@pytest.mark.parametrize("cls", FLAT + [AutoBatchedMultivariateNormal])
def test_log_prob_matches_rsample_and_log_prob(cls):
    torch.manual_seed(7)
    model = Tree() if cls is not AutoBatchedMultivariateNormal else _Blocks()
    guide = cls(model)
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z, lq = guide.rsample_and_log_prob(None, (5,))
    assert torch.allclose(guide.log_prob(None, z), lq, atol=1e-4)


class _Blocks(MonadicProgram):
    """Sites sharing a plate of 4: a (4,) and b (4, 2); y observed per row."""

    def __init__(self):
        super().__init__()
        rows = Plate("rows", size=4)
        self.declare(
            Latent("a", lambda: dist.Normal(0.0, 1.0), plate=rows),
            Latent("b", lambda: dist.Independent(dist.Normal(torch.zeros(2), 1.0), 1), plate=rows),
            Observed("y", lambda a, b: dist.Normal(a + b.sum(-1), 1.0), plate=rows, ),
        )


def test_batched_mvn_is_block_diagonal():
    model = _Blocks()
    guide = AutoBatchedMultivariateNormal(model)
    assert guide.batch_shape == (4,) and guide.latent_dim == 3
    assert guide.scale_tril.shape == (4, 3, 3)
    with torch.no_grad():
        guide.scale_tril_raw.normal_()
    z = guide.rsample(None, (2,))
    assert z["a"].shape == (2, 4) and z["b"].shape == (2, 4, 2)
    u = torch.cat([z["a"].unsqueeze(-1), z["b"]], -1)  # (2, 4, 3): block i is (a_i, b_i)
    want = dist.MultivariateNormal(guide.loc, scale_tril=guide.scale_tril).log_prob(u).sum(-1)
    assert torch.allclose(guide.log_prob(None, z), want, atol=1e-5)


def test_batched_mvn_needs_shared_leading_dims():
    with pytest.raises(GuideError, match="share its leading"):
        AutoBatchedMultivariateNormal(Tree())


def test_low_rank_rank_is_checked():
    model = Collinear(3)
    assert AutoLowRankMultivariateNormal(model).rank == 1  # round(sqrt(2))
    with pytest.raises(GuideError, match=r"rank must be an integer in \[1, latent_dim=2\]"):
        AutoLowRankMultivariateNormal(model, rank=3)


@pytest.mark.parametrize("cls", FLAT + [AutoLaplaceApproximation])
def test_flat_guides_refuse_subsampled_local_latents(cls):
    with pytest.raises(GuideError, match="subsampled local latent variables"):
        cls(LocalNormal(100, subsample_size=10))
