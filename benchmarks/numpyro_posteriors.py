"""The ten posteriordb models of ``quivers.models.posteriordb`` written for NumPyro, for the
NUTS column of ``benchmarks/time_to_posterior.py``.

Each takes the quivers batch (the same design matrices and transformed data, converted to
JAX arrays) and declares the same density as the quivers model and posteriordb's Stan
program. ``reference_values`` maps NUTS draws to posteriordb's parameter names, so the
draws can be checked against the gold-standard ones (the port's own test).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpyro
import numpyro.distributions as nd
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints


def _flat(n: int | None = None, support=constraints.real):
    return nd.ImproperUniform(support, (), () if n is None else (n,))


def eight_schools(b):
    J = b["y"].shape[0]
    theta_trans = numpyro.sample("theta_trans", nd.Normal(jnp.zeros(J), 1.0).to_event(1))
    mu = numpyro.sample("mu", nd.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", nd.HalfCauchy(5.0))
    numpyro.sample("y", nd.Normal(mu + tau * theta_trans, b["sigma"]).to_event(1), obs=b["y"])


def _linear(response, beta_prior, sigma_prior):
    def model(b):
        beta = numpyro.sample("beta", beta_prior(b["X"].shape[-1]))
        sigma = numpyro.sample("sigma", sigma_prior)
        numpyro.sample("y", nd.Normal(b["X"] @ beta, sigma).to_event(1), obs=b[response])
    return model


def diamonds(b):
    k = b["Xc"].shape[-1]
    coef = numpyro.sample("b", nd.Normal(jnp.zeros(k), 1.0).to_event(1))
    intercept = numpyro.sample("Intercept", nd.StudentT(3.0, 8.0, 10.0))
    sigma = numpyro.sample("sigma", _flat(support=constraints.positive))
    numpyro.factor("sigma_prior", nd.StudentT(3.0, 0.0, 10.0).log_prob(sigma) + math.log(2.0))
    numpyro.sample("Y", nd.Normal(intercept + b["Xc"] @ coef, sigma).to_event(1), obs=b["Y"])


def ark(b):
    K = b["lags"].shape[-1]
    alpha = numpyro.sample("alpha", nd.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", nd.Normal(jnp.zeros(K), 10.0).to_event(1))
    sigma = numpyro.sample("sigma", nd.HalfCauchy(2.5))
    numpyro.sample("y", nd.Normal(alpha + b["lags"] @ beta, sigma).to_event(1), obs=b["y"])


def _gp_f(rho, alpha, f_tilde, x):
    d2 = (x[:, None] - x[None, :]) ** 2
    cov = alpha**2 * jnp.exp(-d2 / (2 * rho**2)) + 1e-10 * jnp.eye(x.shape[0])
    return jnp.linalg.cholesky(cov) @ f_tilde


def gp_pois_regr(b):
    n = b["x"].shape[0]
    rho = numpyro.sample("rho", nd.Gamma(25.0, 4.0))
    alpha = numpyro.sample("alpha", nd.HalfNormal(2.0))
    f_tilde = numpyro.sample("f_tilde", nd.Normal(jnp.zeros(n), 1.0).to_event(1))
    f = _gp_f(rho, alpha, f_tilde, b["x"])
    numpyro.sample("k", nd.Poisson(jnp.exp(f)).to_event(1), obs=b["k"])


def low_dim_gauss_mix(b):
    mu = numpyro.sample("mu", _flat(2, constraints.ordered_vector))
    numpyro.factor("mu_prior", nd.Normal(0.0, 2.0).log_prob(mu).sum())
    sigma = numpyro.sample("sigma", nd.HalfNormal(jnp.full(2, 2.0)).to_event(1))
    theta = numpyro.sample("theta", nd.Beta(5.0, 5.0))
    y = b["y"][:, None]
    lp = nd.Normal(mu, sigma).log_prob(y) + jnp.log(jnp.stack([theta, 1 - theta]))
    numpyro.factor("y", logsumexp(lp, -1).sum())


def _names(prefix, x):
    return {f"{prefix}[{i + 1}]": x[:, i] for i in range(x.shape[1])}


def _regression_values(z, b):
    return {**_names("beta", z["beta"]), "sigma": z["sigma"]}


MODELS = {
    "eight_schools-eight_schools_noncentered": (
        eight_schools, lambda z, b: {**_names("theta", z["mu"][:, None] + z["tau"][:, None] * z["theta_trans"]),
                                     "mu": z["mu"], "tau": z["tau"]}),
    "kidiq-kidscore_momhsiq": (
        _linear("kid_score", lambda k: _flat(k), nd.HalfCauchy(2.5)), _regression_values),
    "earnings-logearn_height": (
        _linear("y", lambda k: _flat(k), _flat(support=constraints.positive)), _regression_values),
    "mesquite-logmesquite_logvas": (
        _linear("y", lambda k: _flat(k), _flat(support=constraints.positive)), _regression_values),
    "diamonds-diamonds": (
        diamonds, lambda z, b: {**_names("b", z["b"]), "Intercept": z["Intercept"], "sigma": z["sigma"]}),
    "sblrc-blr": (
        _linear("y", lambda k: nd.Normal(jnp.zeros(k), 10.0).to_event(1), nd.HalfNormal(10.0)), _regression_values),
    "arK-arK": (
        ark, lambda z, b: {"alpha": z["alpha"], **_names("beta", z["beta"]), "sigma": z["sigma"]}),
    "gp_pois_regr-gp_pois_regr": (
        gp_pois_regr, lambda z, b: {"rho": z["rho"], "alpha": z["alpha"], **_names("f", _gp_values(z, b))}),
    "low_dim_gauss_mix-low_dim_gauss_mix": (
        low_dim_gauss_mix, lambda z, b: {**_names("mu", z["mu"]), **_names("sigma", z["sigma"]),
                                         "theta": z["theta"]}),
    "nes2000-nes": (
        _linear("y", lambda k: _flat(k), _flat(support=constraints.positive)), _regression_values),
}


def _gp_values(z, b):
    import jax

    return jax.vmap(lambda r, a, f: _gp_f(r, a, f, b["x"]))(z["rho"], z["alpha"], z["f_tilde"])
