"""Discrete latent variables: ``TraceEnum_ELBO``, ``Markov`` chains, ``AutoDiscreteParallel``
and ``infer_discrete``, each against brute-force enumeration of every assignment.

Float64 throughout; the exactness tests compare to 1e-5 (the issue's bound) although the
two computations differ only by rounding (log-sum-exp orders), which is ~1e-12 here.
"""

from __future__ import annotations

import itertools
import math

import pytest
import scipy.stats
import torch
import torch.distributions as dist

from quivers import Latent, Markov, MonadicProgram, Observed, Plate, config_enumerate, vindex
from quivers.errors import BatchError, GuideError, ModelSpecError, ShapeError
from quivers.guides import (
    AutoDelta,
    AutoDiagonalNormal,
    AutoDiscreteParallel,
    AutoGuideList,
    AutoLaplaceApproximation,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormalGuide,
)
from quivers.infer import Predictive, Trace_ELBO, TraceEnum_ELBO, infer_discrete

K, N, D, T = 3, 3, 2, 6


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


class Mixture(MonadicProgram):
    """A mixture with nested plates: ``c_n`` per point, ``b_nd`` per point and feature."""

    def __init__(self, size: int = N, subsample_size: int | None = None, enumerate_c: bool = True) -> None:
        super().__init__()
        data = Plate("data", size=size, subsample_size=subsample_size, dim=-2)
        feat = Plate("feat", size=D, dim=-1)
        self.declare(
            Latent("locs", lambda: dist.Independent(dist.Normal(torch.zeros(K), 3.0), 1)),
            Latent("w", lambda: dist.Dirichlet(torch.ones(K))),
            Latent("c", lambda w: dist.Categorical(probs=w), plate=data,
                   enumerate="parallel" if enumerate_c else None),
            Latent("b", lambda c: dist.Bernoulli(probs=0.2 + 0.25 * c.double()), plate=(data, feat),
                   enumerate="parallel"),
            Observed("x", lambda c, b, locs: dist.Normal(vindex(locs, c) + b, 1.0), plate=(data, feat)),
        )


X = torch.tensor([[0.1, 2.0], [1.5, -0.3], [3.0, 0.7]], dtype=torch.float64)


def mixture_joint(locs: torch.Tensor, w: torch.Tensor, c: tuple[int, ...], b: tuple[int, ...],
                  x: torch.Tensor = X) -> torch.Tensor:
    """``log p(x, c, b | locs, w)`` for one full assignment, written out site by site."""
    total = torch.zeros(())
    for n in range(len(c)):
        total = total + torch.log(w[c[n]] / w.sum())
        for d in range(D):
            p = 0.2 + 0.25 * c[n]
            bit = b[n * D + d]
            total = total + math.log(p if bit else 1 - p) + dist.Normal(locs[c[n]] + bit, 1.0).log_prob(x[n, d])
    return total


def mixture_brute(locs: torch.Tensor, w: torch.Tensor, x: torch.Tensor = X) -> tuple[torch.Tensor, list]:
    """``log p(x, locs, w)`` by summing over all ``K^N 2^(N D)`` assignments, and the list
    of ``(c, b, log joint)``."""
    prior = dist.Normal(torch.zeros(K), 3.0).log_prob(locs).sum() + dist.Dirichlet(torch.ones(K)).log_prob(w)
    table = []
    n = len(x)
    for c in itertools.product(range(K), repeat=n):
        for b in itertools.product((0, 1), repeat=n * D):
            table.append((c, b, mixture_joint(locs, w, c, b, x)))
    return prior + torch.logsumexp(torch.stack([t for *_, t in table]), 0), table


class HMM(MonadicProgram):
    def __init__(self, length: int = T) -> None:
        super().__init__()
        time = Plate("time", size=length)
        self.declare(
            Latent("trans", lambda: dist.Independent(dist.Dirichlet(torch.ones(K, K)), 1)),
            Latent("locs", lambda: dist.Independent(dist.Normal(torch.zeros(K), 2.0), 1)),
            Markov("z", init=lambda: dist.Categorical(logits=torch.zeros(K)),
                   transition=lambda prev, trans: dist.Categorical(probs=vindex(trans, prev, event_dim=1)),
                   plate=time),
            Observed("y", lambda z, locs: dist.Normal(vindex(locs, z), 1.0), plate=time),
        )


Y = torch.tensor([-2.1, -1.7, 0.2, 2.3, 1.9, -0.4], dtype=torch.float64)


def hmm_table(trans: torch.Tensor, locs: torch.Tensor, y: torch.Tensor = Y) -> list:
    """``(path, log p(y, path | trans, locs))`` for every path."""
    out = []
    for zs in itertools.product(range(K), repeat=len(y)):
        t = torch.tensor(-math.log(K))
        for i in range(len(y)):
            if i:
                t = t + torch.log(trans[zs[i - 1], zs[i]] / trans[zs[i - 1]].sum())
            t = t + dist.Normal(locs[zs[i]], 1.0).log_prob(y[i])
        out.append((zs, t))
    return out


def hmm_prior(trans: torch.Tensor, locs: torch.Tensor) -> torch.Tensor:
    return (dist.Dirichlet(torch.ones(K, K)).log_prob(trans).sum()
            + dist.Normal(torch.zeros(K), 2.0).log_prob(locs).sum())


def hmm_brute(trans: torch.Tensor, locs: torch.Tensor) -> torch.Tensor:
    prior = hmm_prior(trans, locs)
    return prior + torch.logsumexp(torch.stack([t for _, t in hmm_table(trans, locs)]), 0)


def _perturbed_delta(model: MonadicProgram, exclude: tuple[str, ...] = ()) -> AutoDelta:
    guide = AutoDelta(model, observed_names=exclude)
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return guide


# ------------------------------------------------------------------ exactness


def test_traceenum_mixture_equals_brute_force_marginal_and_gradient():
    model = Mixture()
    guide = _perturbed_delta(model)  # log q = 0: the ELBO is log p(x, locs, w) with c, b summed out
    loss = TraceEnum_ELBO(max_plate_nesting=2)(model, guide, {"x": X})
    z = guide.rsample()
    brute, _ = mixture_brute(z["locs"].reshape(K), z["w"].reshape(K))
    assert abs(float(-loss.detach()) - float(brute.detach())) < 1e-5
    g_enum = torch.autograd.grad(-loss, list(guide.parameters()))
    z = guide.rsample()
    g_brute = torch.autograd.grad(mixture_brute(z["locs"].reshape(K), z["w"].reshape(K))[0], list(guide.parameters()))
    for a, b in zip(g_enum, g_brute, strict=True):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-6)


def test_traceenum_hmm_equals_brute_force_marginal_and_gradient():
    model = HMM()
    guide = _perturbed_delta(model)
    loss = TraceEnum_ELBO()(model, guide, {"y": Y})
    z = guide.rsample()
    brute = hmm_brute(z["trans"].reshape(K, K), z["locs"].reshape(K))
    assert abs(float(-loss.detach()) - float(brute.detach())) < 1e-5
    g_enum = torch.autograd.grad(-loss, list(guide.parameters()))
    z = guide.rsample()
    g_brute = torch.autograd.grad(hmm_brute(z["trans"].reshape(K, K), z["locs"].reshape(K)), list(guide.parameters()))
    for a, b in zip(g_enum, g_brute, strict=True):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-6)


def test_hmm_cost_is_linear_in_length():
    """A chain of 2,000 steps is contracted (no K^T table): the value is finite and equals
    the sum of the forward recursion computed step by step."""
    length = 2000
    model = HMM(length)
    y = torch.randn(length)
    guide = AutoDelta(model)
    value = -TraceEnum_ELBO()(model, guide, {"y": y})
    z = guide.rsample()
    trans = z["trans"].reshape(K, K)
    locs = z["locs"].reshape(K)
    prior = hmm_prior(trans, locs)
    emit = dist.Normal(locs, 1.0).log_prob(y[:, None])  # (T, K)
    alpha = -math.log(K) + emit[0]
    log_a = torch.log(trans / trans.sum(-1, keepdim=True))
    for t in range(1, length):
        alpha = torch.logsumexp(alpha[:, None] + log_a, 0) + emit[t]
    torch.testing.assert_close(value, prior + torch.logsumexp(alpha, 0), atol=1e-6, rtol=1e-9)


def test_every_elbo_sums_out_model_enumerated_sites():
    """``Trace_ELBO`` (and every objective built on ``weighted_draws``) sums out the sites
    the guide leaves to enumeration, as ``TraceEnum_ELBO`` does."""
    model = Mixture()
    guide = _perturbed_delta(model)
    torch.testing.assert_close(Trace_ELBO()(model, guide, {"x": X}), TraceEnum_ELBO()(model, guide, {"x": X}))


def test_vectorised_particles_match_a_loop():
    model = Mixture()
    guide = AutoNormalGuide(model)
    torch.manual_seed(1)
    a = TraceEnum_ELBO(num_particles=4)(model, guide, {"x": X})
    torch.manual_seed(1)
    b = TraceEnum_ELBO(num_particles=4, vectorize_particles=False)(model, guide, {"x": X})
    assert torch.isfinite(a) and torch.isfinite(b)
    # the same draws in both layouts: with a point-mass guide every particle is the same
    delta = _perturbed_delta(model)
    torch.testing.assert_close(TraceEnum_ELBO(num_particles=3)(model, delta, {"x": X}),
                               TraceEnum_ELBO(num_particles=1)(model, delta, {"x": X}))


def test_subsampled_enumerated_plate_is_unbiased():
    """Averaged over every subsample of 2 of 4 points, the scaled minibatch objective equals
    the full-data one exactly (each point's term is summed out before scaling)."""
    x4 = torch.cat([X, torch.tensor([[0.5, 0.5]])])
    full_model = Mixture(size=4)
    guide = _perturbed_delta(full_model)
    full = TraceEnum_ELBO()(full_model, guide, {"x": x4})
    sub_model = Mixture(size=4, subsample_size=2)
    values = []
    for idx in itertools.combinations(range(4), 2):
        i = torch.tensor(idx)
        values.append(TraceEnum_ELBO()(sub_model, guide, {"x": x4[i], "data": i}))
    torch.testing.assert_close(torch.stack(values).mean(), full, atol=1e-10, rtol=1e-10)


# ------------------------------------------------------------------ guide-side enumeration


class DiscreteParallelModel(MonadicProgram):
    """Pyro's ``test_discrete_parallel`` model."""

    def __init__(self) -> None:
        super().__init__()
        p = Plate("data", size=5)
        self.declare(
            Latent("weights", lambda: dist.Dirichlet(0.5 * torch.ones(2))),
            Latent("locs", lambda: dist.Independent(dist.Normal(torch.zeros(2), 10.0), 1)),
            Latent("scale", lambda: dist.LogNormal(0.0, 1.0)),
            Latent("assignment", lambda weights: dist.Categorical(weights), plate=p),
            Observed("obs", lambda assignment, locs, scale: dist.Normal(vindex(locs, assignment), scale), plate=p),
        )


PYRO_DATA = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0])


@pytest.mark.parametrize("continuous", [AutoNormalGuide, AutoDelta, AutoDiagonalNormal, AutoMultivariateNormal,
                                        AutoLowRankMultivariateNormal, AutoLaplaceApproximation])
def test_discrete_parallel(continuous):
    model = DiscreteParallelModel()
    guide = AutoGuideList(model)
    guide.append(continuous(model, observed_names=["assignment"]))
    guide.append(AutoDiscreteParallel(model, observed_names=["weights", "locs", "scale"]))
    loss = TraceEnum_ELBO(max_plate_nesting=1)(model, guide, {"obs": PYRO_DATA})
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in guide.parameters())


def test_discrete_parallel_is_the_exact_expectation():
    """With a point mass on the continuous sites, the objective is
    ``sum_a q(a) [log p(x, a, theta) - log q(a)]`` over all 2^5 assignments."""
    model = DiscreteParallelModel()
    delta = _perturbed_delta(model, ("assignment",))
    disc = AutoDiscreteParallel(model, observed_names=["weights", "locs", "scale"])
    with torch.no_grad():
        disc.logits["assignment"].copy_(torch.randn(5, 2))
    guide = AutoGuideList(model, [delta, disc])
    value = -TraceEnum_ELBO()(model, guide, {"obs": PYRO_DATA})
    z = delta.rsample()
    w, locs, scale = z["weights"].reshape(2), z["locs"].reshape(2), z["scale"].reshape(())
    prior = (dist.Dirichlet(0.5 * torch.ones(2)).log_prob(w) + dist.Normal(torch.zeros(2), 10.0).log_prob(locs).sum()
             + dist.LogNormal(0.0, 1.0).log_prob(scale))
    log_q = torch.log_softmax(disc.logits["assignment"], -1)
    total = torch.zeros(())
    for a in itertools.product((0, 1), repeat=5):
        lq = sum(log_q[i, a[i]] for i in range(5))
        lp = prior + sum(torch.log(w[a[i]] / w.sum()) + dist.Normal(locs[a[i]], scale).log_prob(PYRO_DATA[i])
                         for i in range(5))
        total = total + lq.exp() * (lp - lq)
    torch.testing.assert_close(value, total, atol=1e-8, rtol=1e-8)


# ------------------------------------------------------------------ infer_discrete


def test_infer_discrete_map_equals_brute_force_argmax():
    model = Mixture()
    locs, w = torch.tensor([-1.0, 0.5, 2.0]), torch.tensor([0.2, 0.3, 0.5])
    out = infer_discrete(model, batch={"x": X}, temperature=0, values={"locs": locs[None], "w": w[None]})
    _, table = mixture_brute(locs, w)
    c, b, _ = max(table, key=lambda r: float(r[2]))
    assert out["c"].reshape(-1).tolist() == list(c)
    assert out["b"].reshape(-1).tolist() == [float(v) for v in b]

    hmm = HMM()
    trans = torch.softmax(torch.randn(K, K), -1)
    hlocs = torch.tensor([-2.0, 0.0, 2.0])
    out = infer_discrete(hmm, batch={"y": Y}, temperature=0, values={"trans": trans[None], "locs": hlocs[None]})
    path, _ = max(hmm_table(trans, hlocs), key=lambda r: float(r[1]))
    assert out["z"].reshape(-1).tolist() == list(path)


def _chi2_pvalue(draws: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-square test of categorical ``draws`` against ``probs`` (cells with
    expected count below 5 are pooled)."""
    n = draws.numel()
    probs = probs.detach()
    counts = torch.bincount(draws.reshape(-1).long(), minlength=probs.numel()).double()
    expected = probs * n
    keep = expected >= 5
    obs = torch.cat([counts[keep], counts[~keep].sum(0, keepdim=True)]) if (~keep).any() else counts
    exp = torch.cat([expected[keep], expected[~keep].sum(0, keepdim=True)]) if (~keep).any() else expected
    return float(scipy.stats.chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue)


def test_infer_discrete_draws_match_exact_marginals():
    """Each site's draws against its exact posterior marginal; the smallest p-value over
    the 6 + 9 tests must exceed 1e-4 (a Bonferroni-style bound: a correct sampler fails
    with probability ~1.5e-3; the seed is fixed, so the test is deterministic)."""
    torch.manual_seed(3)
    n = 3000
    trans = torch.softmax(torch.randn(K, K), -1)
    hlocs = torch.tensor([-2.0, 0.0, 2.0])
    out = infer_discrete(HMM(), batch={"y": Y}, temperature=1, num_samples=n,
                         values={"trans": trans.expand(n, K, K), "locs": hlocs.expand(n, K)})
    table = hmm_table(trans, hlocs)
    post = torch.softmax(torch.stack([t for _, t in table]), 0)
    paths = torch.tensor([p for p, _ in table])
    pvalues = []
    for t in range(T):
        marg = torch.stack([post[paths[:, t] == k].sum() for k in range(K)])
        pvalues.append(_chi2_pvalue(out["z"][:, t], marg))
    locs, w = torch.tensor([-1.0, 0.5, 2.0]), torch.tensor([0.2, 0.3, 0.5])
    out = infer_discrete(Mixture(), batch={"x": X}, temperature=1, num_samples=n,
                         values={"locs": locs.expand(n, K), "w": w.expand(n, K)})
    _, table = mixture_brute(locs, w)
    post = torch.softmax(torch.stack([t for *_, t in table]), 0)
    cs = torch.tensor([c for c, _, _ in table])
    bs = torch.tensor([b for _, b, _ in table])
    for i in range(N):
        marg = torch.stack([post[cs[:, i] == k].sum() for k in range(K)])
        pvalues.append(_chi2_pvalue(out["c"][:, i, 0], marg))
        for d in range(D):
            marg = torch.stack([post[bs[:, i * D + d] == k].sum() for k in range(2)])
            pvalues.append(_chi2_pvalue(out["b"][:, i, d], marg))
    assert min(pvalues) > 1e-4, pvalues


# ------------------------------------------------------------------ Markov chains outside enumeration


def test_markov_chain_distribution_log_prob_and_sample():
    model = HMM()
    trace = model.trace({}, sample_latent=True, sample_observed=True)
    z = trace["z"].value
    trans = trace["trans"].value.reshape(K, K)
    expected = -math.log(K) + sum(float(torch.log(trans[z[i - 1], z[i]] / trans[z[i - 1]].sum()))
                                  for i in range(1, T))
    assert abs(float(trace["z"].log_prob) - expected) < 1e-10
    # transition frequencies of long prior draws match the matrix
    chain = trace["z"].fn
    fixed = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.3, 0.3, 0.4]])
    long = type(chain)(chain.init, lambda prev: dist.Categorical(probs=vindex(fixed, prev, 1)), 4000, -1).sample()
    counts = torch.zeros(K, K)
    counts.index_put_((long[:-1], long[1:]), torch.ones(3999), accumulate=True)
    freq = counts / counts.sum(-1, keepdim=True)
    assert (freq - fixed).abs().max() < 0.05  # ~1,300 transitions per row: sd <= 0.014


def test_predictive_draws_enumerated_sites_from_their_posterior():
    model = Mixture()
    guide = _perturbed_delta(model)
    z = guide.rsample()
    out = Predictive(model, guide=guide, num_samples=2000)({"x": X})
    _, table = mixture_brute(z["locs"].reshape(K), z["w"].reshape(K))
    post = torch.softmax(torch.stack([t for *_, t in table]), 0)
    cs = torch.tensor([c for c, _, _ in table])
    marg = torch.stack([post[cs[:, 0] == k].sum() for k in range(K)])
    assert _chi2_pvalue(out["c"][:, 0, 0], marg) > 1e-3
    assert out["x"].shape == (2000, N, D)


# ------------------------------------------------------------------ marking sites, errors


def test_config_enumerate_marks_finite_discrete_sites():
    model = Mixture(enumerate_c=False)
    with pytest.raises(GuideError, match="enumerate"):
        AutoNormalGuide(model)
    config_enumerate(model)
    assert model.latent_step("c").enumerate == "parallel"
    assert model.latent_step("locs").enumerate is None
    assert AutoNormalGuide(model).latent_names == ["locs", "w"]


def test_errors():
    with pytest.raises(ModelSpecError, match="sequential"):
        Latent("c", lambda: dist.Bernoulli(0.5), enumerate="sequential")
    time = Plate("time", size=3)
    with pytest.raises(ModelSpecError, match="prev"):
        Markov("z", init=lambda: dist.Bernoulli(0.5), transition=lambda z: dist.Bernoulli(0.5), plate=time)
    with pytest.raises(ModelSpecError, match="subsampled"):
        Markov("z", init=lambda: dist.Bernoulli(0.5), transition=lambda prev: dist.Bernoulli(0.5),
               plate=Plate("t", size=5, subsample_size=2))
    with pytest.raises(ShapeError, match="broadcast"):
        vindex(torch.zeros(2, 3), torch.zeros(4, dtype=torch.long))
    model = Mixture()
    with pytest.raises(BatchError, match="TraceEnum_ELBO"):
        model.trace({"x": X}, {"locs": torch.zeros(K), "w": torch.ones(K) / K})
    unsized = Mixture(size=None)
    assert AutoNormalGuide(unsized).latent_names == ["locs", "w"]  # the data sizes the plate later
    with pytest.raises(GuideError, match="unknown size"):
        AutoDiscreteParallel(unsized)
    with pytest.raises(GuideError, match="neither enumerated"):
        TraceEnum_ELBO()(Mixture(enumerate_c=False), AutoNormalGuide(model), {"x": X})


class NotATree(MonadicProgram):
    def __init__(self):
        super().__init__()
        a, b = Plate("a", size=2, dim=-1), Plate("b", size=2, dim=-2)
        self.declare(
            Latent("mu", lambda: dist.Normal(0.0, 1.0)),
            Latent("u", lambda: dist.Bernoulli(0.5), plate=a, enumerate="parallel"),
            Latent("v", lambda: dist.Bernoulli(0.5), plate=b, enumerate="parallel"),
            Observed("x", lambda u, v, mu: dist.Normal(mu + u + v, 1.0), plate=(a, b)),
        )


def test_non_tree_plated_model_is_refused():
    model = NotATree()
    with pytest.raises(ModelSpecError, match="not a tree"):
        TraceEnum_ELBO()(model, AutoNormalGuide(model), {"x": torch.zeros(2, 2)})


# ------------------------------------------------------------------ more structures against brute force


def _log_marginal(model, batch, values):
    """``log sum_enum p(x, enum | values)`` from TraceEnum_ELBO with a point mass at ``values``."""
    from quivers.infer.enumerated import model_log_density

    return model_log_density(model, model.prepare(batch), values, torch.Size())[0]


def test_global_site_over_a_plate_equals_brute_force():
    """A change point: one enumerated site outside the plate that every count reads."""

    class Switch(MonadicProgram):
        def __init__(self):
            super().__init__()
            time = Plate("time", size=5)
            self.declare(
                Latent("tau", lambda: dist.Categorical(logits=torch.tensor([0.1, -0.3, 0.2, 0.0, 0.5])),
                       enumerate="parallel"),
                Latent("early", lambda: dist.Gamma(2.0, 1.0)),
                Observed("y", lambda tau, early, time: dist.Poisson(torch.where(time < tau, early, 1.0)), plate=time),
            )

    y = torch.tensor([3.0, 2.0, 4.0, 1.0, 0.0])
    early = torch.tensor(2.5)
    value = _log_marginal(Switch(), {"y": y}, {"early": early.reshape(1)})
    prior_tau = torch.log_softmax(torch.tensor([0.1, -0.3, 0.2, 0.0, 0.5]), 0)
    terms = [prior_tau[k] + sum(dist.Poisson(early if t < k else torch.tensor(1.0)).log_prob(y[t]) for t in range(5))
             for k in range(5)]
    expected = dist.Gamma(2.0, 1.0).log_prob(early) + torch.logsumexp(torch.stack(terms), 0)
    torch.testing.assert_close(value, expected, atol=1e-10, rtol=1e-10)


def test_chains_in_a_sequences_plate_with_a_local_site_per_step_equal_brute_force():
    """Two sequences of a 2-state chain along ``time`` (``along=``), each step with a
    second enumerated site ``w`` that depends on the state, and a one-hot observation."""
    k, length, seqs = 2, 4, 2
    trans = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
    w_probs = torch.tensor([0.3, 0.9])
    y = torch.tensor([[0.2, 1.5, 1.1, -0.4], [2.0, 0.3, 0.1, 1.7]])

    class Chains(MonadicProgram):
        def __init__(self):
            super().__init__()
            seq, time = Plate("seq", size=seqs, dim=-2), Plate("time", size=length, dim=-1)
            self.declare(
                Latent("mu", lambda: dist.Normal(0.0, 1.0)),
                Markov("z", init=lambda: dist.Categorical(probs=torch.tensor([0.5, 0.5])),
                       transition=lambda prev: dist.Categorical(probs=vindex(trans, prev, 1)),
                       plate=(seq, time), along=time),
                Latent("w", lambda z: dist.Bernoulli(probs=vindex(w_probs, z)), plate=(seq, time),
                       enumerate="parallel"),
                Observed("y", lambda z, w, mu: dist.Normal(mu + z.double() + w, 0.7), plate=(seq, time)),
            )

    mu = torch.tensor(0.3)
    value = _log_marginal(Chains(), {"y": y}, {"mu": mu.reshape(1, 1)})
    total = dist.Normal(0.0, 1.0).log_prob(mu)
    for s in range(seqs):
        paths = []
        for zs in itertools.product(range(k), repeat=length):
            for ws in itertools.product((0, 1), repeat=length):
                t = torch.log(torch.tensor(0.5))
                for i in range(length):
                    if i:
                        t = t + torch.log(trans[zs[i - 1], zs[i]])
                    p = w_probs[zs[i]]
                    t = t + torch.log(p if ws[i] else 1 - p)
                    t = t + dist.Normal(mu + zs[i] + ws[i], 0.7).log_prob(y[s, i])
                paths.append(t)
        total = total + torch.logsumexp(torch.stack(paths), 0)
    torch.testing.assert_close(value, total, atol=1e-10, rtol=1e-10)


def test_one_hot_sites_enumerate_like_categorical_ones():
    """A site with an event dim (``OneHotCategorical``) gives the same marginal as its
    ``Categorical`` twin."""

    def mixture(one_hot):
        class M(MonadicProgram):
            def __init__(self):
                super().__init__()
                data = Plate("data", size=N, dim=-2)
                feat = Plate("feat", size=D, dim=-1)
                probs = torch.tensor([0.2, 0.5, 0.3])
                c = (Latent("c", lambda: dist.OneHotCategorical(probs=probs), plate=data, enumerate="parallel")
                     if one_hot else Latent("c", lambda: dist.Categorical(probs=probs), plate=data,
                                            enumerate="parallel"))
                loc = ((lambda c, locs: (c * locs).sum(-1)) if one_hot
                       else (lambda c, locs: vindex(locs, c)))
                self.declare(
                    Latent("locs", lambda: dist.Independent(dist.Normal(torch.zeros(K), 3.0), 1)),
                    c,
                    Observed("x", lambda c, locs: dist.Normal(loc(c, locs), 1.0), plate=(data, feat)),
                )
        return M()

    locs = torch.tensor([-1.0, 0.5, 2.0]).reshape(1, 1, K)
    torch.testing.assert_close(_log_marginal(mixture(True), {"x": X}, {"locs": locs}),
                               _log_marginal(mixture(False), {"x": X}, {"locs": locs}), atol=1e-10, rtol=1e-10)
