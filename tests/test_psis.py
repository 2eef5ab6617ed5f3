"""PSIS diagnostic, importance-resampled draws and the ArviZ export, against closed forms."""

from __future__ import annotations

import math

import arviz as az
import pytest
import torch
from torch import distributions as dist

from quivers import Deterministic, Latent, MonadicProgram, Observed, Plate
from quivers.errors import ConfigError
from quivers.guides import AutoMultivariateNormal
from quivers.infer import psis_diagnostic, to_inference_data

N, D = 20, 3


class NormalMean(MonadicProgram):
    """``mu ~ Normal(0, 10 I_D)``, ``y_i ~ Normal(mu, I_D)``: the posterior is
    ``Normal(sum y / (n + 0.01), 1 / (n + 0.01))`` per coordinate, the evidence a Gaussian."""

    def __init__(self) -> None:
        super().__init__()
        data = Plate("data", size=N)
        self.declare(
            Latent("mu", lambda: dist.Independent(dist.Normal(torch.zeros(D), 10.0), 1)),
            Deterministic("mu_sum", lambda mu: mu.sum(-1)),
            Observed("y", lambda mu: dist.Independent(dist.Normal(mu, 1.0), 1), plate=data),
        )


def setup(seed: int = 0) -> tuple[NormalMean, dict, torch.Tensor, float, float]:
    g = torch.Generator().manual_seed(seed)
    y = 1.0 + torch.randn(N, D, generator=g)
    prec = N + 0.01
    mean = y.sum(0) / prec
    # log evidence per coordinate: y_.d ~ MVN(0, I + 100 11^T)
    cov = torch.eye(N, dtype=torch.float64) + 100.0
    log_z = float(dist.MultivariateNormal(torch.zeros(N, dtype=torch.float64), cov).log_prob(y.double().T).sum())
    return NormalMean(), {"y": y}, mean, prec ** -0.5, log_z


def guide_at(model: NormalMean, mean: torch.Tensor, sd: float, ratio: float, shift: float = 0.0):
    """An AutoMultivariateNormal at the posterior mean (+ shift sds) with sds ``ratio * sd``."""
    guide = AutoMultivariateNormal(model)
    guide._set_moments(mean + shift * sd, torch.eye(D) * (ratio * sd) ** 2)
    return guide


def test_exact_guide_gives_the_evidence_and_full_ess():
    """With q equal to the posterior every weight is p(x): the IS estimate is the closed-form
    log evidence (float32 log joint: 1e-3 nats) and the ESS is the number of draws."""
    torch.manual_seed(0)
    model, batch, mean, sd, log_z = setup()
    d = psis_diagnostic(model, guide_at(model, mean, sd, 1.0), batch, num_particles=500)
    assert abs(d.log_evidence - log_z) < 1e-2
    assert d.ess > 499
    assert d.num_particles == 500


@pytest.mark.parametrize("ratio", [0.3, 0.45, 0.6])
def test_k_hat_of_a_too_narrow_guide_is_the_theoretical_tail_index(ratio):
    """For Gaussians with sd ratio r = sd_q / sd_p the weights' tail is Pareto with
    k = 1 - r^2 (P(w > t) ~ t^(-1/(1 - r^2)), up to a polynomial factor from the chi-square
    in D = 3 dims, which biases a finite-sample estimate upwards): 0.80 for r = 0.45, 0.64
    for r = 0.6. PSIS's estimate from 4000 draws has a standard error near 0.05 (Vehtari et
    al. 2024, fig. 3), so 0.15 is three of them. For r = 0.3 (k = 0.91) only the verdict
    is checked: such heavy tails are estimated with a large upward bias."""
    torch.manual_seed(1)
    model, batch, mean, sd, _ = setup()
    d = psis_diagnostic(model, guide_at(model, mean, sd, ratio), batch, num_particles=4000)
    if ratio < 0.4:
        assert d.k_hat > 0.7
    else:
        assert abs(d.k_hat - (1 - ratio**2)) < 0.15
    assert ("do not trust" in d.reading) == (d.k_hat >= 0.7)
    assert float(d) == d.k_hat


def test_a_wide_guide_is_good():
    torch.manual_seed(2)
    model, batch, mean, sd, _ = setup()
    d = psis_diagnostic(model, guide_at(model, mean, sd, 1.3, shift=0.2), batch, num_particles=2000)
    assert d.k_hat < 0.5 and d.reading.startswith("good")


def test_psis_resampling_corrects_a_shifted_wide_guide():
    """A guide 1.5x too wide and 0.5 sd off: its own draws miss the mean by 0.5 sd; the
    resampled draws (pool 40,000) are within 0.05 sd of the posterior mean and 5% of its sd
    (Monte Carlo error of 4000 resampled draws from an ESS near 25,000: about 0.02 sd)."""
    torch.manual_seed(3)
    model, batch, mean, sd, _ = setup()
    guide = guide_at(model, mean, sd, 1.5, shift=0.5)
    raw = guide.sample_posterior(batch, (4000,))["mu"]
    assert ((raw.mean(0) - mean).abs() / sd).min() > 0.4
    z = guide.sample_posterior(batch, (4000,), psis=True, num_particles=40_000)
    assert z["mu"].shape == (4000, D) and z["mu_sum"].shape == (4000,)
    assert ((z["mu"].mean(0) - mean).abs() / sd).max() < 0.05
    assert ((z["mu"].std(0) / sd) - 1).abs().max() < 0.05
    assert torch.allclose(z["mu_sum"], z["mu"].sum(-1))


def test_psis_resampling_warns_for_an_untrustworthy_guide():
    torch.manual_seed(4)
    model, batch, mean, sd, _ = setup()
    with pytest.warns(UserWarning, match="not reliable"):
        guide_at(model, mean, sd, 0.2).sample_posterior(batch, (100,), psis=True)


def test_psis_particles_checked():
    model, batch, mean, sd, _ = setup()
    with pytest.raises(ConfigError, match="num_particles"):
        psis_diagnostic(model, guide_at(model, mean, sd, 1.0), batch, num_particles=0)


def test_inference_data_groups_shapes_and_loo():
    """Every group, site shapes with plate names, the pointwise log-likelihood equal to the
    closed form at each draw, and az.loo / az.summary running on it."""
    torch.manual_seed(5)
    model, batch, mean, sd, _ = setup()
    guide = guide_at(model, mean, sd, 1.0)
    idata = to_inference_data(model, guide, batch, num_samples=200)
    for group in ("posterior", "posterior_predictive", "observed_data", "log_likelihood", "sample_stats"):
        assert group in idata.groups(), group
    assert idata.posterior["mu"].shape == (1, 200, D)
    assert idata.posterior["mu_sum"].shape == (1, 200)
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "data")
    assert idata.posterior_predictive["y"].shape == (1, 200, N, D)
    assert idata.observed_data["y"].dims[0] == "data"
    mu = torch.as_tensor(idata.posterior["mu"].values[0])
    ll = dist.Normal(mu.unsqueeze(1), 1.0).log_prob(batch["y"].double()).sum(-1)
    assert torch.allclose(torch.as_tensor(idata.log_likelihood["y"].values[0]), ll, atol=1e-4)
    assert math.isfinite(idata.sample_stats.attrs["psis_k_hat"])
    loo = az.loo(idata)
    assert math.isfinite(float(loo["elpd_loo"]))
    summary = az.summary(idata, kind="stats")
    assert {"mu[0]", "mu[1]", "mu[2]", "mu_sum"} <= set(summary.index)
