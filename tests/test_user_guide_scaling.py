"""Guides written by users with local latents under subsampling: the objectives scale the
guide's log-density per site, as the model's, so a user guide's plain ``log_prob`` is right."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as dist
from torch import nn

from quivers import Latent, MonadicProgram, Observed, Plate
from quivers.errors import GuideError
from quivers.guides import Guide
from quivers.infer import SVI, Trace_ELBO


class Local(MonadicProgram):
    """z_i ~ N(0, 1), y_i ~ N(z_i, 1): the posterior of each z_i is N(y_i / 2, 1 / 2)."""

    def __init__(self, n):
        super().__init__()
        data = Plate("data", size=n)
        self.declare(
            Latent("z", lambda: dist.Normal(0.0, 1.0), plate=data),
            Observed("y", lambda z: dist.Normal(z, 1.0), plate=data),
        )


class Amortized(Guide):
    """q(z_i | y_i) = N(a y_i + b, softplus(c)): written the natural way, with no scaling."""

    def __init__(self, model):
        super().__init__(model)
        self.a, self.b, self.c = (nn.Parameter(torch.tensor(v)) for v in (0.0, 0.3, -2.0))

    @property
    def latent_names(self):
        return ["z"]

    def _q(self, batch):
        return dist.Normal(self.a * batch["y"] + self.b, F.softplus(self.c))

    def rsample(self, batch=None, sample_shape=()):
        return {"z": self._q(batch).rsample(torch.Size(sample_shape))}

    def log_prob(self, batch, sites):
        return self._q(batch).log_prob(sites["z"]).sum(-1)


@pytest.mark.parametrize("with_indices", [True, False], ids=["indices", "rows-only"])
def test_an_amortized_user_guide_on_minibatches_recovers_the_exact_posterior(with_indices):
    """Minibatches of 32 of 1024 rows; the optimum of the full-data ELBO is a = 1/2, b = 0,
    scale = sqrt(1/2). Without the objective scaling the guide's term (by 1024/32), its
    entropy would be underweighted 32-fold and the scale would collapse (to 0.12, measured on
    the previous main)."""
    torch.manual_seed(0)
    n, bsz, steps = 1024, 32, 3000
    y = torch.randn(n) * math.sqrt(2.0)  # the marginal of y: N(0, 2)
    model = Local(n)
    guide = Amortized(model)
    optim = torch.optim.Adam(guide.parameters(), lr=0.02)
    sched = torch.optim.lr_scheduler.ExponentialLR(optim, gamma=0.02 ** (1 / steps))
    svi = SVI(model, guide, optim, Trace_ELBO(num_particles=4))
    for _ in range(steps):
        idx = torch.randint(n, (bsz,))
        batch = {"y": y[idx], "data": idx} if with_indices else {"y": y[idx]}
        svi.step(batch)
        sched.step()
    scale = float(F.softplus(guide.c))
    # the lr decays to 4e-4; the remaining SGD noise and the sample's own estimate of the
    # optimum (1024 rows) leave a few 0.01 of error, measured ~0.01
    assert float(guide.a) == pytest.approx(0.5, abs=0.04)
    assert float(guide.b) == pytest.approx(0.0, abs=0.05)
    assert scale == pytest.approx(math.sqrt(0.5), abs=0.04)


def test_the_objective_scales_the_guide_term_exactly():
    n, idx = 100, torch.tensor([3, 17, 42, 99, 5])
    y = torch.randn(n)
    model = Local(n)
    guide = Amortized(model)
    batch = {"y": y[idx], "data": idx}
    torch.manual_seed(7)
    loss = Trace_ELBO().loss(model, guide, batch)
    torch.manual_seed(7)
    z = guide.rsample(batch, (1,))["z"]
    with torch.no_grad():
        terms = dist.Normal(0.0, 1.0).log_prob(z) + dist.Normal(z, 1.0).log_prob(y[idx]) - guide._q(batch).log_prob(z)
    assert loss == pytest.approx(-float(terms.sum()) * n / len(idx), rel=1e-5)


class Hier(MonadicProgram):
    def __init__(self, n, subsample_size):
        super().__init__()
        data = Plate("data", size=n, subsample_size=subsample_size)
        self.declare(
            Latent("mu", lambda: dist.Normal(0.0, 3.0)),
            Latent("z", lambda mu: dist.Normal(mu, 1.0), plate=data),
            Observed("y", lambda z: dist.Normal(z, 0.5), plate=data),
        )


class Mixed(Guide):
    """A global and a local site in one user guide."""

    def __init__(self, model, n):
        super().__init__(model)
        self.m = nn.Parameter(torch.tensor(0.5))
        self.loc = nn.Parameter(torch.randn(n))

    @property
    def latent_names(self):
        return ["mu", "z"]

    def _qs(self, batch):
        loc = self.loc[batch["data"]] if "data" in batch else self.loc
        return dist.Normal(self.m, 0.2), dist.Normal(loc, 0.3)

    def rsample(self, batch=None, sample_shape=()):
        qm, qz = self._qs(batch)
        ss = torch.Size(sample_shape)
        return {"mu": qm.rsample(ss).unsqueeze(-1), "z": qz.rsample(ss)}

    def log_prob(self, batch, sites):
        return sum(v.sum(-1) for v in self._parts(batch, sites).values())

    def _parts(self, batch, sites):
        qm, qz = self._qs(batch)
        return {"mu": qm.log_prob(sites["mu"]), "z": qz.log_prob(sites["z"])}


class MixedWithTerms(Mixed):
    def log_prob_terms(self, batch, sites):
        return {(k,): v.sum(-1) for k, v in self._parts(batch, sites).items()}


def test_a_user_guide_mixing_global_and_local_sites_must_split_its_terms():
    n = 40
    model = Hier(n, subsample_size=8)
    batch = {"y": torch.randn(n)}
    with pytest.raises(GuideError, match="log_prob_terms gives one term for sites \\['mu', 'z'\\]"):
        Trace_ELBO()(model, Mixed(model, n), batch)
    guide = MixedWithTerms(model, n)
    prepared = model.prepare(batch)
    torch.manual_seed(1)
    loss = Trace_ELBO().loss(model, guide, prepared)
    torch.manual_seed(1)
    z = guide.rsample(prepared, (1,))
    with torch.no_grad():
        parts = guide._parts(prepared, z)
        idx = prepared["data"]
        lp_mu = dist.Normal(0.0, 3.0).log_prob(z["mu"]).sum() - parts["mu"].sum()
        lp_z = (dist.Normal(z["mu"], 1.0).log_prob(z["z"]) + dist.Normal(z["z"], 0.5).log_prob(prepared["y"])).sum() \
            - parts["z"].sum()
    assert idx.shape == (8,)
    assert loss == pytest.approx(-float(lp_mu + lp_z * n / 8), rel=1e-5)
    full = Hier(n, subsample_size=None)  # without subsampling, one term is fine
    assert math.isfinite(Trace_ELBO().loss(full, Mixed(full, n), {"y": torch.randn(n)}))
