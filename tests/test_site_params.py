"""Flat storage of the global sites' parameters (``SiteParameters``) in AutoNormal and
AutoDelta: the densities against per-site ``torch.distributions``, the rows a batch
selects, the per-site state dict, and loading checkpoints by site name."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import perturbed
from torch import distributions as dist
from torch.distributions import biject_to

from quivers import Latent, MonadicProgram, Observed, Plate
from quivers.guides import AutoDeltaGuide, AutoNormalGuide
from quivers.infer import Trace_ELBO


class Mixed(MonadicProgram):
    """Global sites of three supports, a site in a plate that is never subsampled, and a
    local site in a subsampled plate."""

    def __init__(self) -> None:
        super().__init__()
        groups = Plate("groups", size=3, dim=-2)
        rows = Plate("rows", size=20, subsample_size=5, dim=-1)
        self.declare(
            Latent("mu", lambda: dist.Normal(0.0, 2.0)),
            Latent("tau", lambda: dist.HalfNormal(1.0)),
            Latent("w", lambda: dist.Dirichlet(torch.ones(3))),
            Latent("g", lambda mu: dist.Normal(mu, 1.0), plate=groups),
            Latent("z", lambda tau: dist.Normal(0.0, tau), plate=rows),
            Observed("y", lambda z, g: dist.Normal(z + g, 1.0), plate=(groups, rows)),
        )


def _reference_log_q(guide, z, rows=None, groups=None):
    """``sum_site log q(z_site)`` from per-site ``torch.distributions``: the Normal in
    unconstrained space pushed through ``biject_to(support)``, rows selected by hand."""
    total = 0.0
    for s in guide.registry:
        loc, scale = guide.locs[s.name], F.softplus(guide.scales_raw[s.name])
        if s.name == "z" and rows is not None:  # trace layout (1, 20): rows along the last dim
            loc, scale = loc[:, rows], scale[:, rows]
        if s.name == "g" and groups is not None:
            loc, scale = loc[groups], scale[groups]
        q = dist.Normal(loc, scale)
        if s.unconstrained_event_ndim:
            q = dist.Independent(q, s.unconstrained_event_ndim)
        q = dist.TransformedDistribution(q, [biject_to(s.support)])
        lp = q.log_prob(z[s.name])
        total = total + lp.reshape(lp.shape[:1] + (-1,)).sum(-1)
    return total


def test_parameters_are_flat_for_global_sites_and_per_site_in_subsampled_plates():
    guide = AutoNormalGuide(Mixed())
    assert guide.locs.flat_names == ("mu", "tau", "w", "g")
    assert guide.locs.flat.shape == (1 + 1 + 2 + 3,)  # the simplex has 2 free coordinates
    assert {n for n, _ in guide.named_parameters()} == {"locs.flat", "locs.local.z", "scales_raw.flat",
                                                       "scales_raw.local.z"}
    sites = ("mu", "tau", "w", "g", "z")
    assert list(guide.state_dict()) == [f"{k}.{n}" for k in ("locs", "scales_raw") for n in sites]
    assert guide.locs["g"].shape == (3, 1) and guide.locs["z"].shape == (1, 20)  # trace layout
    with torch.no_grad():
        guide.locs["g"].fill_(0.25)  # a view: the write reaches the flat vector
    assert torch.equal(guide.locs.flat[4:], torch.full((3,), 0.25))


def test_log_q_of_flat_draws_matches_per_site_distributions():
    torch.manual_seed(0)
    model = Mixed()
    guide = perturbed(AutoNormalGuide(model), 0.3, 1)
    batch = model.prepare({"y": torch.randn(3, 20)})
    z, terms = guide.rsample_and_log_prob_terms(batch, (6,))
    assert set(terms) == {("mu", "tau", "w", "g"), ("z",)}  # the flat term, then the local site
    rows = batch["rows"]
    ref = _reference_log_q(guide, z, rows=rows)
    # float32: the flat sum and the per-site sums add ~10 terms in different orders
    torch.testing.assert_close(sum(terms.values()), ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(guide.log_prob(batch, z), ref, rtol=1e-5, atol=1e-4)
    for name, t in guide.log_prob_terms(batch, z).items():
        torch.testing.assert_close(t, terms[name], rtol=1e-5, atol=1e-4)


def test_a_batch_that_selects_rows_of_a_global_site_uses_the_per_site_path():
    """Indices for the (never subsampled) ``groups`` plate select rows of ``g``: the flat
    vector cannot be used whole, so each site is drawn and scored on its own."""
    torch.manual_seed(0)
    model = Mixed()
    guide = perturbed(AutoNormalGuide(model), 0.3, 1)
    groups = torch.tensor([0, 2])
    batch = model.prepare({"y": torch.randn(2, 20), "groups": groups})
    z, terms = guide.rsample_and_log_prob_terms(batch, (4,))
    assert all(len(k) == 1 for k in terms)
    assert z["g"].shape == (4, 2, 1)
    ref = _reference_log_q(guide, z, rows=batch["rows"], groups=groups)
    torch.testing.assert_close(sum(terms.values()), ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(guide.log_prob(batch, z), ref, rtol=1e-5, atol=1e-4)


def test_per_site_checkpoints_load_by_site_name():
    model = Mixed()
    saved = perturbed(AutoNormalGuide(model), 0.3, 1).state_dict()
    # a state dict written before the flat storage: one ParameterDict entry per site
    old = {k: v.clone() for k, v in saved.items()}
    fresh = AutoNormalGuide(model)
    fresh.load_state_dict(old)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in old.items())

    partial = {k: v for k, v in old.items() if k != "locs.tau"}
    other = AutoNormalGuide(model)
    before = other.locs["tau"].detach().clone()
    result = other.load_state_dict(partial, strict=False)
    assert result.missing_keys == ["locs.tau"] and result.unexpected_keys == []
    assert torch.equal(other.locs["tau"], before) and torch.equal(other.locs["mu"], old["locs.mu"])
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: \"locs.tau\""):
        AutoNormalGuide(model).load_state_dict(partial)

    wrong = dict(old, **{"locs.w": torch.zeros(3)})
    target = AutoNormalGuide(model)
    untouched = target.locs["w"].detach().clone()
    with pytest.raises(RuntimeError, match=r"size mismatch for locs.w: copying a param with shape \(3,\)"):
        target.load_state_dict(wrong)
    assert torch.equal(target.locs["w"], untouched)  # the mismatched site is not loaded


def test_auto_delta_points_are_flat_and_save_per_site():
    model = Mixed()
    guide = AutoDeltaGuide(model)
    assert {n for n, _ in guide.named_parameters()} == {"locs.flat", "locs.local.z"}
    assert list(guide.state_dict()) == [f"locs.{n}" for n in ("mu", "tau", "w", "g", "z")]
    with torch.no_grad():
        guide.locs["tau"].fill_(0.5)
    assert float(guide.median()["tau"]) == pytest.approx(float(torch.tensor(0.5).exp()), rel=1e-6)  # exp: positive


def test_sites_of_different_dtypes_keep_their_own_parameters():
    class TwoDtypes(MonadicProgram):
        def __init__(self) -> None:
            super().__init__()
            self.declare(Latent("a", lambda: dist.Normal(torch.tensor(0.0), 1.0)),
                         Latent("b", lambda: dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)))

    guide = AutoNormalGuide(TwoDtypes())
    assert guide.locs.flat is None
    assert guide.locs["a"].dtype == torch.float32 and guide.locs["b"].dtype == torch.float64
    z, lq = guide.rsample_and_log_prob(None, (3,))
    assert z["b"].dtype == torch.float64 and lq.shape == (3,)


def test_gradients_of_log_q_match_per_site_distributions():
    """The flat log-density's gradient with respect to the flat parameters equals that of
    the per-site ``torch.distributions`` twin (built from views of the same parameters)."""
    torch.manual_seed(0)
    model = Mixed()
    guide = perturbed(AutoNormalGuide(model), 0.3, 1)
    batch = model.prepare({"y": torch.randn(3, 20)})
    z = {k: v.detach() for k, v in guide.rsample(batch, (5,)).items()}
    params = [guide.locs.flat, guide.scales_raw.flat, guide.locs.local["z"], guide.scales_raw.local["z"]]
    ours = torch.autograd.grad(guide.log_prob(batch, z).sum(), params)
    ref = torch.autograd.grad(_reference_log_q(guide, z, rows=batch["rows"]).sum(), params)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    loss = Trace_ELBO(num_particles=4)(model, guide, batch)
    loss.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in params)
