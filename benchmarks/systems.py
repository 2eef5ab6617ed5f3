"""Step functions for the speed benchmark: one per (system, problem).

Problems (all mean-field Normal guides, Trace_ELBO, Adam lr 0.01):
  a  non-centred eight schools (Rubin 1981)
  b  Bayesian logistic regression, breast cancer (569 x 30), full batch
  c  varying intercepts, N rows (50,000 by default), 1,000 groups, 512 rows subsampled per step

Systems:
  floor      hand-written PyTorch: reparameterised mean-field ELBO with torch.distributions
             and torch.optim.Adam (the floor)
  quivers    quivers SVI, eager (options: compile, particles, validation)
  trainer    quivers SVIModule under lightning.Trainer.fit (timed by a callback)
  recommended  accuracy.py's recommended setting (compiled, decaying lr, averaging) on
             posteriordb's eight schools, per guide (the flow / Gaussian step ratio)
  pyro       Pyro AutoNormal + Trace_ELBO
  pyro_jit   Pyro AutoNormal + JitTrace_ELBO
  numpyro    NumPyro AutoNormal + SVI with a jitted update

Each builder returns a zero-argument callable doing one optimisation step (JAX results
are blocked on, so the time is real).
"""

from __future__ import annotations

import torch

from quivers.datasets import load_breast_cancer, simulate_varying_intercepts
from quivers.datasets.real import EIGHT_SCHOOLS_SIGMA, EIGHT_SCHOOLS_Y

GROUPS, SUBSAMPLE, LR = 1000, 512, 0.01


def data(problem: str, rows: int) -> dict:
    if problem == "a":
        return {"y": torch.tensor(EIGHT_SCHOOLS_Y), "sigma": torch.tensor(EIGHT_SCHOOLS_SIGMA)}
    if problem == "b":
        return load_breast_cancer()
    d = simulate_varying_intercepts(rows, GROUPS, seed=0)
    d.pop("true_a")
    return d


# ----------------------------------------------------------------------------- floor
def floor(problem: str, rows: int, particles: int = 1):
    from torch import distributions as dist

    d = data(problem, rows)
    dim = {"a": 10, "b": 31, "c": GROUPS + 4}[problem]
    loc = torch.zeros(dim, requires_grad=True)
    raw = torch.full((dim,), -2.25, requires_grad=True)  # softplus^-1(0.1)
    opt = torch.optim.Adam([loc, raw], lr=LR)
    S = (particles,)

    def log_joint(u):
        if problem == "a":
            mu, ltau, eta = u[..., 0], u[..., 1], u[..., 2:]
            tau = ltau.exp()
            theta = mu[..., None] + tau[..., None] * eta
            return (dist.Normal(0.0, 5.0).log_prob(mu) + dist.HalfCauchy(5.0).log_prob(tau) + ltau
                    + dist.Normal(0.0, 1.0).log_prob(eta).sum(-1)
                    + dist.Normal(theta, d["sigma"]).log_prob(d["y"]).sum(-1))
        if problem == "b":
            w, b = u[..., :30], u[..., 30]
            logits = w @ d["x"].T + b[..., None]
            return (dist.Normal(0.0, 1.0).log_prob(u).sum(-1)
                    + dist.Bernoulli(logits=logits).log_prob(d["y"]).sum(-1))
        mu_a, lsa, a, b, lsy = u[..., 0], u[..., 1], u[..., 2:2 + GROUPS], u[..., -2], u[..., -1]
        sa, sy = lsa.exp(), lsy.exp()
        idx = torch.randint(rows, (SUBSAMPLE,))
        g, x, y = d["group"][idx], d["x"][idx], d["y"][idx]
        lik = dist.Normal(a[..., g] + b[..., None] * x, sy[..., None]).log_prob(y).sum(-1) * (rows / SUBSAMPLE)
        return (dist.Normal(0.0, 5.0).log_prob(mu_a) + dist.HalfNormal(2.5).log_prob(sa) + lsa
                + dist.Normal(mu_a[..., None], sa[..., None]).log_prob(a).sum(-1)
                + dist.Normal(0.0, 5.0).log_prob(b) + dist.HalfNormal(2.5).log_prob(sy) + lsy + lik)

    def step():
        opt.zero_grad()
        q = dist.Normal(loc, torch.nn.functional.softplus(raw))
        u = q.rsample(S)
        loss = -(log_joint(u) - q.log_prob(u).sum(-1)).mean()
        loss.backward()
        opt.step()
        return loss

    return step


# ----------------------------------------------------------------------------- quivers
def _quivers_model(problem: str, rows: int):
    from quivers.models import BayesianLogisticRegression, EightSchools, VaryingIntercepts

    if problem == "a":
        return EightSchools()
    if problem == "b":
        return BayesianLogisticRegression(30)
    return VaryingIntercepts(GROUPS, num_data=rows, subsample_size=SUBSAMPLE)


def quivers(problem: str, rows: int, particles: int = 1, compile: bool = False, validation: bool = True):
    import quivers as q
    from quivers.guides import AutoNormalGuide
    from quivers.infer import SVI, Trace_ELBO

    q.enable_validation(validation)
    model = _quivers_model(problem, rows)
    guide = AutoNormalGuide(model)
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=LR), Trace_ELBO(num_particles=particles),
              **({"compile": True} if compile else {}))
    batch = data(problem, rows)
    step = _Step(lambda: svi.step(batch))
    if compile:
        step.compile_s = _compile_seconds(step)
    return step


class _Step:
    """A step callable that can carry figures measured while building it."""

    def __init__(self, fn):
        self.fn = fn
        self.compile_s = None

    def __call__(self):
        return self.fn()


def _compile_seconds(step) -> float:
    """The first compiled step's extra time: the second step (compilation and one compiled
    step) minus the first (eager, with every check)."""
    import time

    t0 = time.perf_counter()
    step()
    t1 = time.perf_counter()
    step()
    t2 = time.perf_counter()
    return (t2 - t1) - (t1 - t0)


def recommended(problem: str, rows: int, guide: str = "AutoMultivariateNormal"):
    """One step of accuracy.py's recommended setting on posteriordb's eight schools
    (float64, 1 particle, compiled, Adam with an exponentially decaying lr, every parameter
    averaged), for the flow / Gaussian step ratio; ``problem`` and ``rows`` are unused."""
    from quivers import guides
    from quivers.infer import SVI, IterateAverage, Trace_ELBO
    from quivers.models.posteriordb import load_posterior

    torch.set_default_dtype(torch.float64)
    post = load_posterior("eight_schools-eight_schools_noncentered")
    g = getattr(guides, guide)(post.model)
    optim = torch.optim.Adam(g.parameters(), lr=torch.tensor(LR))
    sched = torch.optim.lr_scheduler.ExponentialLR(optim, gamma=0.01 ** (1 / 10_000))
    svi = SVI(post.model, g, optim, Trace_ELBO(), compile=True)
    averaged = IterateAverage(g.parameters())

    def one():
        svi.step(post.batch)
        sched.step()
        averaged.update()

    step = _Step(one)
    step.compile_s = _compile_seconds(step)
    return step


def trainer(problem: str, rows: int, particles: int = 1, steps: int = 0, on_block=None):
    """Returns a callable that runs the whole Trainer.fit, calling ``on_block`` between blocks."""
    import lightning as L

    from quivers.datasets import TensorDataModule
    from quivers.guides import AutoNormalGuide
    from quivers.infer import Trace_ELBO
    from quivers.lightning import SVIModule

    model = _quivers_model(problem, rows)
    module = SVIModule(model, AutoNormalGuide(model), elbo=Trace_ELBO(num_particles=particles), lr=LR)
    dm = TensorDataModule(data(problem, rows), steps_per_epoch=steps)

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            on_block(trainer.global_step)

    tr = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, callbacks=[Clock()], accelerator="cpu")
    return lambda: tr.fit(module, dm)


# ----------------------------------------------------------------------------- pyro / numpyro
def _ppl_model(problem: str, rows: int, ppl, D, d: dict, zeros):
    """The benchmark model for Pyro or NumPyro: ``ppl`` is ``pyro`` or ``numpyro``, ``D``
    its distributions module, ``d`` the data as that library's arrays."""
    if problem == "a":
        def model():
            mu = ppl.sample("mu", D.Normal(0.0, 5.0))
            tau = ppl.sample("tau", D.HalfCauchy(5.0))
            with ppl.plate("schools", 8):
                eta = ppl.sample("eta", D.Normal(0.0, 1.0))
                ppl.sample("y", D.Normal(mu + tau * eta, d["sigma"]), obs=d["y"])
    elif problem == "b":
        def model():
            w = ppl.sample("w", D.Normal(zeros(30), 1.0).to_event(1))
            b = ppl.sample("b", D.Normal(0.0, 1.0))
            with ppl.plate("data", d["x"].shape[0]):
                ppl.sample("y", D.Bernoulli(logits=d["x"] @ w + b), obs=d["y"])
    else:
        def model():
            mu_a = ppl.sample("mu_a", D.Normal(0.0, 5.0))
            sigma_a = ppl.sample("sigma_a", D.HalfNormal(2.5))
            with ppl.plate("groups", GROUPS):
                a = ppl.sample("a", D.Normal(mu_a, sigma_a))
            b = ppl.sample("b", D.Normal(0.0, 5.0))
            sigma_y = ppl.sample("sigma_y", D.HalfNormal(2.5))
            with ppl.plate("data", rows, subsample_size=SUBSAMPLE) as idx:
                ppl.sample("y", D.Normal(a[d["group"][idx]] + b * d["x"][idx], sigma_y), obs=d["y"][idx])
    return model


def pyro(problem: str, rows: int, jit: bool = False):
    import pyro as p
    import pyro.distributions as pd
    from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal

    p.clear_param_store()
    p.enable_validation(False)  # Pyro's fast path, as its docs recommend for timing
    model = _ppl_model(problem, rows, p, pd, data(problem, rows), torch.zeros)
    guide = AutoNormal(model)
    svi = SVI(model, guide, p.optim.Adam({"lr": LR}), JitTrace_ELBO() if jit else Trace_ELBO())
    return lambda: svi.step()


def pyro_jit(problem: str, rows: int):
    return pyro(problem, rows, jit=True)


def numpyro(problem: str, rows: int):
    import jax
    import jax.numpy as jnp
    import numpyro as npr
    import numpyro.distributions as nd
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    d = {k: jnp.asarray(v.numpy()) for k, v in data(problem, rows).items()}
    model = _ppl_model(problem, rows, npr, nd, d, jnp.zeros)
    svi = SVI(model, AutoNormal(model), npr.optim.Adam(LR), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0))
    update = jax.jit(svi.update)
    box = [state]

    def step():
        box[0], loss = update(box[0])
        loss.block_until_ready()
        return loss

    return step


SYSTEMS = {"floor": floor, "quivers": quivers, "pyro": pyro, "pyro_jit": pyro_jit, "numpyro": numpyro,
           "recommended": recommended}
