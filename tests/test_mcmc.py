"""The reference sampler (``NUTS`` / ``MCMC``, Pyro's sampler on a quivers model): its
potential against the log density written by hand, its draws against a closed-form
posterior and against posteriordb's reference draws, and its ArviZ export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributions as dist

from quivers import Latent, MonadicProgram, Observed, Plate
from quivers.errors import ConfigError
from quivers.infer import MCMC, NUTS
from quivers.models import EightSchools
from quivers.models.posteriordb import default_root, load_posterior, standardized_w1

pytest.importorskip("pyro")

Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def test_potential_is_the_negative_log_density_in_unconstrained_space():
    """For (mu, log tau, eta): -U = log N(mu; 0, 5) + log HalfCauchy(tau; 5) + log tau
    + sum log N(eta; 0, 1) + sum log N(y; mu + tau eta, sigma) (the log tau is the
    Jacobian of tau = exp(u))."""
    kernel = NUTS(EightSchools())
    batch = EightSchools().prepare({"y": Y, "sigma": SIGMA}, subsample=False)
    potential = kernel.potential_fn(batch)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        u = torch.randn(10, generator=gen)
        mu, ltau, eta = u[0], u[1], u[2:]
        tau = ltau.exp()
        hand = (dist.Normal(0.0, 5.0).log_prob(mu) + dist.HalfCauchy(5.0).log_prob(tau) + ltau
                + dist.Normal(0.0, 1.0).log_prob(eta).sum() + dist.Normal(mu + tau * eta, SIGMA).log_prob(Y).sum())
        torch.testing.assert_close(potential({"u": u}), -hand)


def test_potential_sums_out_enumerated_sites(float64):
    """A two-component mixture with the assignments enumerated: -U is the brute-force
    log marginal over all 2^3 assignments."""
    class Mix(MonadicProgram):
        def __init__(self):
            super().__init__()
            data = Plate("data", size=3)
            self.declare(Latent("m", lambda: dist.Normal(0.0, 2.0)),
                         Latent("c", lambda: dist.Bernoulli(0.4), plate=data, enumerate="parallel"),
                         Observed("x", lambda m, c: dist.Normal(m * c, 1.0), plate=data))

    x = torch.tensor([0.2, 1.9, 2.4])
    model = Mix()
    potential = NUTS(model).potential_fn(model.prepare({"x": x}))
    m = torch.tensor(1.3)
    lik = torch.logsumexp(torch.stack([math.log(0.6) + dist.Normal(0.0, 1.0).log_prob(x),
                                       math.log(0.4) + dist.Normal(m, 1.0).log_prob(x)]), 0).sum()
    torch.testing.assert_close(potential({"u": m.reshape(1)}), -(dist.Normal(0.0, 2.0).log_prob(m) + lik))


class NormalMean(MonadicProgram):
    def __init__(self):
        super().__init__()
        data = Plate("data", size=None)
        self.declare(Latent("z", lambda: dist.Normal(0.0, 1.0)),
                     Latent("s", lambda: dist.LogNormal(0.0, 0.5)),
                     Observed("y", lambda z: dist.Normal(z, 1.0), plate=data))


def test_draws_match_a_closed_form_posterior_and_export_to_arviz():
    """z ~ N(0, 1), y_i ~ N(z, 1): z | y ~ N(sum y / (n + 1), 1 / (n + 1)); s keeps its
    LogNormal(0, 0.5) prior."""
    import arviz as az

    torch.manual_seed(0)
    y = torch.randn(9) + 1.0
    mcmc = MCMC(NUTS(NormalMean()), num_samples=300, warmup_steps=200, num_chains=2).run({"y": y})
    s = mcmc.get_samples()
    assert s["z"].shape == (600,) and s["s"].shape == (600,)
    assert mcmc.get_samples(group_by_chain=True)["z"].shape == (2, 300)
    mean, sd = float(y.sum() / 10), math.sqrt(1 / 10)
    # 600 NUTS draws of a Gaussian have ESS of several hundred: 5 Monte Carlo standard
    # errors is about 0.07 for the mean; the sd's relative MC error is ~1/sqrt(2 ESS)
    assert abs(float(s["z"].mean()) - mean) < 5 * sd / math.sqrt(200)
    assert abs(float(s["z"].std()) / sd - 1) < 0.15
    assert abs(float(s["s"].log().mean())) < 5 * 0.5 / math.sqrt(200)
    assert abs(float(s["s"].log().std()) / 0.5 - 1) < 0.15
    idata = mcmc.to_inference_data()
    assert idata.posterior["z"].shape == (2, 300)
    assert idata.log_likelihood["y"].shape == (2, 300, 9)
    assert idata.sample_stats["diverging"].shape == (2, 300)
    assert int(idata.sample_stats["diverging"].sum()) == sum(mcmc.num_divergences)
    summary = az.summary(idata, var_names=["z"])
    assert float(summary["r_hat"].iloc[0]) < 1.05


def test_bad_settings_raise_before_sampling():
    model = NormalMean()
    with pytest.raises(ConfigError, match="target_accept_prob must lie in"):
        NUTS(model, target_accept_prob=1.5)
    with pytest.raises(ConfigError, match="step_size must be a number > 0"):
        NUTS(model, step_size=0)
    with pytest.raises(ConfigError, match="num_samples"):
        MCMC(NUTS(model), num_samples=0)
    with pytest.raises(ConfigError, match="warmup_steps must be an int >= 0"):
        MCMC(NUTS(model), num_samples=10, warmup_steps=-1)
    with pytest.raises(ConfigError, match="kernel must be quivers.infer.NUTS"):
        MCMC(object(), num_samples=10)
    with pytest.raises(ConfigError, match=r"call run\(batch\) first"):
        MCMC(NUTS(model), num_samples=10).get_samples()


needs_data = pytest.mark.skipif(not default_root().exists(), reason="../shared/posteriordb is not beside the repo")


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize("name", ["eight_schools-eight_schools_noncentered", "kidiq-kidscore_momhsiq"])
def test_nuts_matches_posteriordb_reference_draws(name):
    """Mean standardised W1 (accuracy.py's metric) of 2 x 500 NUTS draws against the
    10,000 reference draws <= 0.1. The W1 of 1,000 exact draws against 10,000 is about
    0.03 to 0.05 per parameter from sampling alone, so 0.1 leaves room for NUTS's
    autocorrelation but not for a wrong target."""
    torch.manual_seed(1)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        post = load_posterior(name)
        # a dense mass matrix: the regression's intercept and slopes are strongly correlated
        kernel = NUTS(post.model, full_mass=True)
        mcmc = MCMC(kernel, num_samples=500, warmup_steps=500, num_chains=2).run(post.batch)
        values = post.model.reference_values(mcmc.get_samples(), post.batch)
        draws = np.stack([values[n].numpy() for n in post.names], -1)
    finally:
        torch.set_default_dtype(old)
    w1 = standardized_w1(draws, post.draws)
    assert w1.mean() <= 0.1, dict(zip(post.names, w1.round(3), strict=True))
