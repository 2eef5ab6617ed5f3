"""The ten posteriordb posteriors of the accuracy benchmark, as ``MonadicProgram`` s.

Each model follows the Stan program of posteriordb (stan-dev/posteriordb, BSD-3-Clause)
described in ``../shared/posteriordb/README.md``: improper flat priors where Stan has
none (:class:`~quivers.ImproperUniform`), Stan's constrained supports (``ordered``,
``<lower=0>``). :func:`load_posterior` reads a posterior's data and reference draws;
:meth:`PosteriorModel.reference_values` maps latent draws to the reference's parameter
names (Stan's 1-based ``name[i]``), computing transformed parameters such as ``theta``.
"""

from __future__ import annotations

import json
import math
import pathlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import distributions as dist
from torch.distributions import constraints

from ..constraints import ordered_vector
from ..program import Factor, ImproperUniform, Latent, MonadicProgram, Observed, Plate

__all__ = ["POSTERIORS", "PosteriorModel", "Posterior", "load_posterior", "default_root"]


def default_root() -> pathlib.Path:
    """``../shared/posteriordb`` next to the repository (where CI puts it)."""
    return pathlib.Path(__file__).resolve().parents[3] / "shared" / "posteriordb"


def _names(prefix: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{prefix[1]: x[..., 0], ...}`` (Stan's 1-based names) for a ``(S, n)`` tensor."""
    return {f"{prefix}[{i + 1}]": x[..., i] for i in range(x.shape[-1])}


def _flat(n: int) -> ImproperUniform:
    return ImproperUniform(constraints.real, event_shape=(n,))


class PosteriorModel(MonadicProgram):
    """A posteriordb model: data in the batch (Stan's names), observations in the plate ``data``."""

    def constants(self, **values: float | torch.Tensor) -> None:
        """Register prior constants as buffers (``self.<name>``), so they follow the model's
        device and dtype."""
        for name, v in values.items():
            self.register_buffer(name, torch.as_tensor(v, dtype=torch.get_default_dtype()).clone())

    def reference_values(self, z: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Reference parameters from latent draws (each ``(S,) + site shape``, as
        ``sample_posterior`` returns them): ``{name: (S,)}``."""
        raise NotImplementedError

    @staticmethod
    def batch(data: dict) -> dict[str, torch.Tensor]:
        """The batch (tensors) from posteriordb's ``data.json``."""
        return {k: torch.as_tensor(np.asarray(v), dtype=torch.get_default_dtype()) for k, v in data.items()
                if isinstance(v, list)}


class EightSchoolsNoncentered(PosteriorModel):
    """theta_trans ~ N(0, 1), mu ~ N(0, 5), tau ~ HalfCauchy(5); y ~ N(mu + tau theta_trans, sigma)."""

    def __init__(self, J: int = 8) -> None:
        super().__init__()
        schools = Plate("data", size=J)
        self.constants(zero=0.0, one=1.0, five=5.0)
        self.declare(
            Latent("theta_trans", lambda: dist.Normal(self.zero, self.one), plate=schools),
            Latent("mu", lambda: dist.Normal(self.zero, self.five)),
            Latent("tau", lambda: dist.HalfCauchy(self.five)),
            Observed("y", lambda theta_trans, mu, tau, sigma: dist.Normal(mu + tau * theta_trans, sigma),
                     plate=schools),
        )

    def reference_values(self, z, batch):
        theta = z["mu"][..., None] + z["tau"][..., None] * z["theta_trans"]
        return {**_names("theta", theta), "mu": z["mu"], "tau": z["tau"]}


class _LinearRegression(PosteriorModel):
    """y ~ N(X beta, sigma); each subclass's ``batch`` builds the design ``X`` from the data."""

    response = "y"

    def __init__(self, num_data: int, beta_prior, sigma_prior) -> None:
        super().__init__()
        data = Plate("data", size=num_data)
        self.declare(
            Latent("beta", beta_prior),
            Latent("sigma", sigma_prior),
            Observed(self.response, lambda beta, sigma, X: dist.Normal((X * beta).sum(-1), sigma), plate=data),
        )

    def reference_values(self, z, batch):
        return {**_names("beta", z["beta"]), "sigma": z["sigma"]}


class KidIQ(_LinearRegression):
    """kid_score ~ N(b1 + b2 mom_hs + b3 mom_iq, sigma); beta flat, sigma ~ HalfCauchy(2.5)."""

    response = "kid_score"

    def __init__(self, N: int = 434) -> None:
        super().__init__(N, lambda: _flat(3), lambda: dist.HalfCauchy(self.sigma_scale))
        self.constants(sigma_scale=2.5)

    @classmethod
    def batch(cls, data):
        b = PosteriorModel.batch(data)
        one = torch.ones_like(b["mom_hs"])
        return {"kid_score": b["kid_score"], "X": torch.stack([one, b["mom_hs"], b["mom_iq"]], -1)}


class EarningsHeight(_LinearRegression):
    """log(earn) ~ N(b1 + b2 height, sigma); beta flat, sigma flat on (0, inf)."""

    def __init__(self, N: int = 1192) -> None:
        super().__init__(N, lambda: _flat(2), lambda: ImproperUniform(constraints.positive))

    @classmethod
    def batch(cls, data):
        b = PosteriorModel.batch(data)
        return {"y": b["earn"].log(), "X": torch.stack([torch.ones_like(b["height"]), b["height"]], -1)}


class MesquiteLogVas(_LinearRegression):
    """log(weight) ~ N(b1 + b2 log(d1 d2 ch) + b3 log(d1 d2) + b4 log(d1 / d2) + b5 log(total_height)
    + b6 log(density) + b7 group, sigma); flat priors, sigma > 0."""

    def __init__(self, N: int = 46) -> None:
        super().__init__(N, lambda: _flat(7), lambda: ImproperUniform(constraints.positive))

    @classmethod
    def batch(cls, data):
        b = PosteriorModel.batch(data)
        d1, d2, ch = b["diam1"], b["diam2"], b["canopy_height"]
        cols = [torch.ones_like(d1), (d1 * d2 * ch).log(), (d1 * d2).log(), (d1 / d2).log(),
                b["total_height"].log(), b["density"].log(), b["group"]]
        return {"y": b["weight"].log(), "X": torch.stack(cols, -1)}


class SblrcBLR(_LinearRegression):
    """y ~ N(X beta, sigma); beta ~ N(0, 10), sigma ~ HalfNormal(10)."""

    def __init__(self, N: int = 100, D: int = 5) -> None:
        super().__init__(N, lambda: dist.Independent(dist.Normal(self.beta_loc, self.ten), 1),
                         lambda: dist.HalfNormal(self.ten))
        self.constants(beta_loc=torch.zeros(D), ten=10.0)

    @classmethod
    def batch(cls, data):
        b = PosteriorModel.batch(data)
        return {"y": b["y"], "X": b["X"]}


class NES(_LinearRegression):
    """partyid7 ~ N(b1 + b2 real_ideo + b3 race_adj + b4 age30_44 + b5 age45_64 + b6 age65up
    + b7 educ1 + b8 gender + b9 income, sigma); flat priors, sigma > 0."""

    def __init__(self, N: int = 476) -> None:
        super().__init__(N, lambda: _flat(9), lambda: ImproperUniform(constraints.positive))

    @classmethod
    def batch(cls, data):
        b = PosteriorModel.batch(data)
        age = b["age_discrete"]
        cols = [torch.ones_like(age), b["real_ideo"], b["race_adj"], (age == 2).to(age), (age == 3).to(age),
                (age == 4).to(age), b["educ1"], b["gender"], b["income"]]
        return {"y": b["partyid7"], "X": torch.stack(cols, -1)}


class Diamonds(PosteriorModel):
    """Y ~ N(Intercept + Xc b, sigma), Xc = X without its first column, column-centred;
    b ~ N(0, 1), Intercept ~ StudentT(3, 8, 10), sigma ~ HalfStudentT(3, 0, 10)."""

    def __init__(self, N: int = 5000, K: int = 25) -> None:
        super().__init__()
        data = Plate("data", size=N)
        k = K - 1
        self.constants(b_loc=torch.zeros(k), zero=0.0, one=1.0, three=3.0, eight=8.0, ten=10.0)
        self.declare(
            Latent("b", lambda: dist.Independent(dist.Normal(self.b_loc, self.one), 1)),
            Latent("Intercept", lambda: dist.StudentT(self.three, self.eight, self.ten)),
            Latent("sigma", lambda: ImproperUniform(constraints.positive)),
            Factor("sigma_prior", lambda sigma: dist.StudentT(self.three, self.zero, self.ten).log_prob(sigma)
                   + math.log(2.0)),  # half-Student-t on (0, inf)
            Observed("Y", lambda b, Intercept, sigma, Xc: dist.Normal(Intercept + (Xc * b).sum(-1),
                                                                        sigma), plate=data),
        )

    @classmethod
    def batch(cls, data):
        X = torch.as_tensor(np.asarray(data["X"]), dtype=torch.get_default_dtype())[:, 1:]
        return {"Y": torch.as_tensor(np.asarray(data["Y"]), dtype=torch.get_default_dtype()),
                "Xc": X - X.mean(0)}

    def reference_values(self, z, batch):
        return {**_names("b", z["b"]), "Intercept": z["Intercept"], "sigma": z["sigma"]}


class ArK(PosteriorModel):
    """y[t] ~ N(alpha + sum_k beta[k] y[t-k], sigma), t > K; alpha, beta ~ N(0, 10),
    sigma ~ HalfCauchy(2.5)."""

    def __init__(self, T: int = 200, K: int = 5) -> None:
        super().__init__()
        data = Plate("data", size=T - K)
        self.constants(zero=0.0, ten=10.0, beta_loc=torch.zeros(K), sigma_scale=2.5)
        self.declare(
            Latent("alpha", lambda: dist.Normal(self.zero, self.ten)),
            Latent("beta", lambda: dist.Independent(dist.Normal(self.beta_loc, self.ten), 1)),
            Latent("sigma", lambda: dist.HalfCauchy(self.sigma_scale)),
            Observed("y", lambda alpha, beta, sigma, lags: dist.Normal(
                alpha + (lags * beta).sum(-1), sigma), plate=data),
        )

    @classmethod
    def batch(cls, data):
        y = torch.as_tensor(np.asarray(data["y"]), dtype=torch.get_default_dtype())
        K = int(data["K"])
        lags = torch.stack([y[K - k - 1: len(y) - k - 1] for k in range(K)], -1)  # lags[t, k] = y[t - k - 1]
        return {"y": y[K:], "lags": lags}

    def reference_values(self, z, batch):
        return {"alpha": z["alpha"], **_names("beta", z["beta"]), "sigma": z["sigma"]}


class GPPoisRegr(PosteriorModel):
    """k ~ Poisson(exp(f)), f = L f_tilde, L = chol(alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2)) + 1e-10 I);
    rho ~ Gamma(25, 4), alpha ~ HalfNormal(2), f_tilde ~ N(0, 1). Reference names: rho, alpha, f[i]."""

    def __init__(self, N: int = 11) -> None:
        super().__init__()
        data = Plate("data", size=N)
        self.N = N
        self.constants(rho_shape=25.0, rho_rate=4.0, two=2.0, f_loc=torch.zeros(N), one=1.0)
        self.declare(
            Latent("rho", lambda: dist.Gamma(self.rho_shape, self.rho_rate)),
            Latent("alpha", lambda: dist.HalfNormal(self.two)),
            Latent("f_tilde", lambda: dist.Independent(dist.Normal(self.f_loc, self.one), 1)),
            Observed("k", lambda rho, alpha, f_tilde, x: dist.Poisson(self.f(rho, alpha, f_tilde, x).exp()),
                     plate=data),  # f: sample_shape + (N,)
        )

    @staticmethod
    def f(rho, alpha, f_tilde, x):
        """GP values ``L f_tilde``, shape ``sample_shape + (N,)``, from site values of shape
        ``sample_shape + (1,)`` (rho, alpha) and ``sample_shape + (1, N)`` (f_tilde)."""
        d2 = (x.unsqueeze(-1) - x.unsqueeze(-2)).square()
        a, r = alpha[..., None, None], rho[..., None, None]  # sample_shape + (1, 1, 1)
        cov = a.square() * torch.exp(-d2 / (2 * r.square()))
        cov = cov + 1e-10 * torch.eye(x.shape[-1], dtype=cov.dtype, device=cov.device)  # Stan's jitter
        chol = torch.linalg.cholesky(cov)  # sample_shape + (1, N, N)
        return (chol @ f_tilde.unsqueeze(-1))[..., 0, :, 0]

    @classmethod
    def batch(cls, data):
        return {"x": torch.as_tensor(data["x"], dtype=torch.get_default_dtype()),
                "k": torch.as_tensor(data["k"], dtype=torch.get_default_dtype())}

    def reference_values(self, z, batch):
        f = self.f(z["rho"][..., None], z["alpha"][..., None], z["f_tilde"][..., None, :], batch["x"])
        return {"rho": z["rho"], "alpha": z["alpha"], **_names("f", f)}


class LowDimGaussMix(PosteriorModel):
    """y ~ theta N(mu1, sigma1) + (1 - theta) N(mu2, sigma2); mu ordered ~ N(0, 2),
    sigma ~ HalfNormal(2), theta ~ Beta(5, 5)."""

    def __init__(self, N: int = 1000) -> None:
        super().__init__()
        data = Plate("data", size=N)
        self.constants(zero=0.0, two=2.0, sigma_scale=torch.full((2,), 2.0), five=5.0)
        self.declare(
            Latent("mu", lambda: ImproperUniform(ordered_vector, event_shape=(2,))),
            Factor("mu_prior", lambda mu: dist.Normal(self.zero, self.two).log_prob(mu).sum(-1)),
            Latent("sigma", lambda: dist.Independent(dist.HalfNormal(self.sigma_scale), 1)),
            Latent("theta", lambda: dist.Beta(self.five, self.five)),
            Observed("y", lambda mu, sigma, theta: dist.MixtureSameFamily(
                dist.Categorical(torch.stack([theta, 1 - theta], -1)), dist.Normal(mu, sigma)), plate=data),
        )

    @classmethod
    def batch(cls, data):
        return {"y": torch.as_tensor(data["y"], dtype=torch.get_default_dtype())}

    def reference_values(self, z, batch):
        return {**_names("mu", z["mu"]), **_names("sigma", z["sigma"]), "theta": z["theta"]}


POSTERIORS: dict[str, type[PosteriorModel]] = {
    "eight_schools-eight_schools_noncentered": EightSchoolsNoncentered,
    "kidiq-kidscore_momhsiq": KidIQ,
    "earnings-logearn_height": EarningsHeight,
    "mesquite-logmesquite_logvas": MesquiteLogVas,
    "diamonds-diamonds": Diamonds,
    "sblrc-blr": SblrcBLR,
    "arK-arK": ArK,
    "gp_pois_regr-gp_pois_regr": GPPoisRegr,
    "low_dim_gauss_mix-low_dim_gauss_mix": LowDimGaussMix,
    "nes2000-nes": NES,
}


@dataclass
class Posterior:
    """One posterior: its model, batch, and reference draws."""

    name: str
    model: PosteriorModel
    batch: dict[str, torch.Tensor]
    names: list[str]
    draws: np.ndarray  # (10000, D) float64


def load_posterior(name: str, root: str | pathlib.Path | None = None) -> Posterior:
    """Read a posterior's data and reference draws and build its model.

    Raises
    ------
    KeyError
        If ``name`` is not one of :data:`POSTERIORS`.
    FileNotFoundError
        If the posterior's folder is missing under ``root``.
    """
    cls = POSTERIORS[name]
    folder = (pathlib.Path(root) if root is not None else default_root()) / name
    data = json.loads((folder / "data.json").read_text())
    ref = np.load(folder / "reference.npz")
    sizes = {k: int(v) for k, v in data.items() if k in ("N", "J", "K", "T", "D") and not isinstance(v, list)}
    args = {ArK: ("T", "K"), Diamonds: ("N", "K"), SblrcBLR: ("N", "D"), EightSchoolsNoncentered: ("J",)}
    model = cls(*(sizes[k] for k in args.get(cls, ("N",))))
    return Posterior(name, model, cls.batch(data), [str(s) for s in ref["names"]], ref["draws"])


def standardized_w1(draws: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-parameter Wasserstein-1 distance between ``draws`` ``(S, D)`` and reference
    draws ``ref`` ``(R, D)``, in units of the reference sd: the mean absolute gap between
    the two empirical quantile functions at ``min(S, R)`` midpoint probabilities.
    Shape ``(D,)``; its mean is the accuracy benchmark's "mean standardised W1"."""
    n = min(len(draws), len(ref))
    qs = (np.arange(n) + 0.5) / n
    return np.abs(np.quantile(draws, qs, axis=0) - np.quantile(ref, qs, axis=0)).mean(0) / ref.std(0)
