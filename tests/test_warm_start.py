"""laplace_warm_start and AutoLaplaceApproximation.fit_map against closed forms."""

from __future__ import annotations

import pytest
import torch
from test_gaussian_guides import Collinear, Tree, _Blocks

from quivers.errors import GuideError
from quivers.guides import (
    AutoBatchedMultivariateNormal,
    AutoDiagonalNormal,
    AutoLaplaceApproximation,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormalGuide,
    AutoStructured,
    laplace_warm_start,
)


@pytest.fixture(scope="module")
def collinear():
    torch.manual_seed(3)
    n = 30
    x1 = torch.randn(n, dtype=torch.float64)
    x = torch.stack([x1, x1 + 0.3 * torch.randn(n, dtype=torch.float64)], -1)
    y = x @ torch.tensor([1.0, -0.5], dtype=torch.float64) + 0.5 * torch.randn(n, dtype=torch.float64)
    return Collinear(n), {"x": x, "y": y}


def _float64(guide):
    return guide.to(torch.float64)


def test_fit_map_finds_the_gaussian_mode(collinear):
    model, batch = collinear
    guide = _float64(AutoLaplaceApproximation(model))
    guide.fit_map(batch)
    mean, cov = model.posterior(batch["x"], batch["y"])
    # a quadratic log joint: L-BFGS converges to the mode (= the mean) to its gradient tolerance
    assert torch.allclose(guide.loc.detach(), mean, atol=1e-6)
    lap = guide.laplace_approximation(batch).get_posterior()
    assert torch.allclose(lap.covariance_matrix, cov, rtol=1e-6)


@pytest.mark.parametrize("cls", [AutoMultivariateNormal, AutoDiagonalNormal, AutoNormalGuide,
                                 AutoLowRankMultivariateNormal])
def test_warm_start_sets_the_laplace_gaussian(collinear, cls):
    model, batch = collinear
    guide = _float64(cls(model))
    report = laplace_warm_start(guide, batch)
    assert report.clipped == 0
    mean, cov = model.posterior(batch["x"], batch["y"])
    if cls is AutoNormalGuide:
        q_mean, q_cov = guide.median(batch)["b"].reshape(-1), torch.diag(guide.scales(batch)["b"].reshape(-1) ** 2)
    else:
        q = guide.get_posterior()
        q_mean = q.mean
        q_cov = torch.diag(q.variance) if cls is AutoDiagonalNormal else q.covariance_matrix
    # exact up to the L-BFGS tolerance: the posterior is Gaussian, so the Laplace
    # approximation is the posterior; diagonal families take its marginal variances, and
    # rank 1 = D - 1 is exact for the low-rank family (probabilistic PCA)
    assert torch.allclose(q_mean, mean, atol=1e-6)
    want = torch.diag(cov.diagonal()) if cls in (AutoDiagonalNormal, AutoNormalGuide) else cov
    assert torch.allclose(q_cov, want, rtol=1e-5, atol=1e-9)


def test_low_rank_warm_start_is_exact_at_rank_d_minus_1():
    torch.manual_seed(2)
    model = Tree()
    y = (torch.randn(3, 4) + torch.tensor([[-1.0], [0.0], [2.0]])).double()
    guide = _float64(AutoLowRankMultivariateNormal(model, rank=3))
    laplace_warm_start(guide, {"y": y})
    mean, cov = model.posterior(y)
    q = guide.get_posterior()
    assert torch.allclose(q.mean, mean, atol=1e-6)
    assert torch.allclose(q.covariance_matrix, cov, rtol=1e-5, atol=1e-9)


def test_batched_warm_start_takes_the_diagonal_blocks():
    torch.manual_seed(0)
    model = _Blocks()
    batch = {"y": torch.randn(4, dtype=torch.float64)}
    full = _float64(AutoMultivariateNormal(model))
    laplace_warm_start(full, batch)
    cov = full.get_posterior().covariance_matrix  # site-major order: a_0..a_3, b_00, b_01, ..., b_31
    blocked = _float64(AutoBatchedMultivariateNormal(model))
    laplace_warm_start(blocked, batch)
    got = blocked.get_posterior().covariance_matrix  # (4, 3, 3): block i is (a_i, b_i0, b_i1)
    for i in range(4):
        idx = torch.tensor([i, 4 + 2 * i, 5 + 2 * i])
        assert torch.allclose(got[i], cov[idx][:, idx], atol=1e-8)


def test_clipping_warns_and_bounds_the_scale(collinear):
    model, batch = collinear
    guide = _float64(AutoMultivariateNormal(model))
    with pytest.warns(UserWarning, match="2 of 2 Hessian eigenvalues below min_precision"):
        report = laplace_warm_start(guide, batch, min_precision=1e8)
    assert report.clipped == 2
    assert torch.allclose(guide.get_posterior().covariance_matrix, 1e-8 * torch.eye(2, dtype=torch.float64))


def test_unsupported_guide_raises_unchanged(collinear):
    model, batch = collinear
    guide = AutoStructured(model)
    before = {k: v.clone() for k, v in guide.state_dict().items()}
    with pytest.raises(GuideError, match="AutoStructured has no Gaussian to set"):
        laplace_warm_start(guide, batch)
    assert all(torch.equal(v, guide.state_dict()[k]) for k, v in before.items())


def test_restarts_escape_a_poor_local_mode():
    """A two-component mixture whose L-BFGS from the init stops at a poor mode (both
    means together, one wide component); random restarts find the separated mode."""
    from quivers.guides import init_to_value
    from quivers.models.posteriordb import LowDimGaussMix

    torch.manual_seed(0)
    y = torch.cat([torch.randn(300, dtype=torch.float64) - 3, torch.randn(200, dtype=torch.float64) + 3])
    model = LowDimGaussMix(N=500)
    f64 = {"dtype": torch.float64}
    start = {"mu": torch.tensor([[-2.5, -2.4]], **f64), "sigma": torch.tensor([[3.0, 0.5]], **f64),
             "theta": torch.tensor([0.5], **f64)}
    one = _float64(AutoMultivariateNormal(model, init_loc_fn=init_to_value(values=start)))
    many = _float64(AutoMultivariateNormal(model, init_loc_fn=init_to_value(values=start)))
    r1 = laplace_warm_start(one, {"y": y})
    r4 = laplace_warm_start(many, {"y": y}, num_restarts=4)
    assert r4.neg_log_density < r1.neg_log_density - 10  # a much better mode (tens of nats)
    mu = many.median()["mu"].reshape(-1)
    # the separated mode sits at the two clusters' centres (-3, 3) within 0.3 (sd of a mean of 200 is 0.07)
    assert abs(float(mu[0]) + 3) < 0.3 and abs(float(mu[1]) - 3) < 0.3
