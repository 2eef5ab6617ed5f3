"""RenyiELBO (IWAE at alpha = 0, DReG), Trace_ELBO(stl=True) and TraceTailAdaptive_ELBO
against closed forms."""

from __future__ import annotations

import pytest
import torch
from helpers import short_trainer
from test_psis import guide_at, setup

from quivers.datasets import TensorDataModule
from quivers.errors import ConfigError
from quivers.infer import SVI, RenyiELBO, Trace_ELBO, TraceTailAdaptive_ELBO
from quivers.lightning import SVIModule


def losses(objective, model, guide, batch, n: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([objective(model, guide, batch) for _ in range(n)]).double()


@pytest.mark.parametrize("objective", [RenyiELBO(0.0, 2), RenyiELBO(0.5, 4), RenyiELBO(1.0, 1),
                                       RenyiELBO(0.0, 4, dreg=True), Trace_ELBO(), Trace_ELBO(stl=True),
                                       TraceTailAdaptive_ELBO(4)])
def test_every_bound_is_the_log_evidence_at_the_exact_posterior(objective):
    """With q the exact posterior every weight equals p(x): each bound is log p(x) for every
    draw (closed form; float32 log joint, so 1e-2 nats over a -90 nat total)."""
    torch.manual_seed(0)
    model, batch, mean, sd, log_z = setup()
    values = -losses(objective, model, guide_at(model, mean, sd, 1.0), batch, 20)
    assert (values - log_z).abs().max() < 1e-2
    assert values.std() < 1e-3


def test_iwae_bound_rises_with_particles_towards_the_evidence():
    """For a guide 0.7x too narrow and 0.5 sd off: E[ELBO] < E[IWAE_2] < E[IWAE_8] < E[IWAE_32]
    <= log p(x) (Burda et al. 2016, thm. 1), each mean over 400 draws; the gaps (about 1.5,
    0.9 and 0.5 nats here) are many standard errors (below 0.05 nats for K >= 2)."""
    torch.manual_seed(1)
    model, batch, mean, sd, log_z = setup()
    guide = guide_at(model, mean, sd, 0.7, shift=0.5)
    means = [-losses(Trace_ELBO(), model, guide, batch, 400).mean()]
    for k in (2, 8, 32):
        means.append(-losses(RenyiELBO(0.0, k), model, guide, batch, 400).mean())
    assert all(a < b for a, b in zip(means, means[1:], strict=False)), means
    assert means[-1] <= log_z + 0.05


def test_renyi_tends_to_the_elbo_as_alpha_tends_to_one():
    """L_alpha = E log w + (1 - alpha)/2 Var(log w) + O((1 - alpha)^2): at alpha = 0.999 its
    mean over 400 draws equals the ELBO's mean within three standard errors."""
    torch.manual_seed(2)
    model, batch, mean, sd, _ = setup()
    guide = guide_at(model, mean, sd, 0.7, shift=0.5)
    renyi = -losses(RenyiELBO(0.999, 8), model, guide, batch, 400)
    elbo = -losses(Trace_ELBO(num_particles=8), model, guide, batch, 400)
    se = (renyi.var() / 400 + elbo.var() / 400).sqrt()
    assert (renyi.mean() - elbo.mean()).abs() < 3 * se


def grads(objective, model, guide, batch) -> torch.Tensor:
    guide.zero_grad()
    objective(model, guide, batch).backward()
    return torch.cat([p.grad.flatten() for p in guide.parameters()])


def test_stl_gradient_is_zero_at_the_exact_posterior_for_every_draw():
    """Roeder et al. (2017): at q = posterior, log p(x, z) - log q(z) is constant in z, so
    the path derivative vanishes draw by draw; Trace_ELBO's standard estimator keeps the
    score term d/dphi log q, which is not zero for a single draw."""
    torch.manual_seed(3)
    model, batch, mean, sd, _ = setup()
    guide = guide_at(model, mean, sd, 1.0)
    for _ in range(10):
        assert grads(Trace_ELBO(stl=True), model, guide, batch).abs().max() < 1e-3
    standard = torch.stack([grads(Trace_ELBO(), model, guide, batch) for _ in range(10)])
    assert standard.abs().max() > 0.1


def test_dreg_has_the_iwae_gradient_in_expectation_with_lower_variance():
    """DReG (Tucker et al. 2018) and the standard IWAE estimator, 300 draws each, K = 8, for a
    guide 0.9x too narrow and 0.2 sd off: their means agree within four standard errors in
    every coordinate, and DReG's total variance is lower. Measured ratio
    (benchmarks/dreg_variance.py): 167 here, 396 at K = 32; for a guide far off (0.7x,
    0.5 sd) about 2.6, as the path term then dominates. The test asks for 10."""
    torch.manual_seed(4)
    model, batch, mean, sd, _ = setup()
    guide = guide_at(model, mean, sd, 0.9, shift=0.2)
    standard = torch.stack([grads(RenyiELBO(0.0, 8), model, guide, batch) for _ in range(300)]).double()
    dreg = torch.stack([grads(RenyiELBO(0.0, 8, dreg=True), model, guide, batch) for _ in range(300)]).double()
    se = ((standard.var(0) + dreg.var(0)) / 300).sqrt()
    assert ((standard.mean(0) - dreg.mean(0)).abs() <= 4 * se + 1e-6).all()
    ratio = float(standard.var(0).sum() / dreg.var(0).sum())
    print(f"IWAE gradient variance / DReG gradient variance: {ratio:.1f}")
    assert ratio > 10


def test_objective_arguments_are_checked():
    with pytest.raises(ConfigError, match="alpha"):
        RenyiELBO(alpha=-0.5)
    with pytest.raises(ConfigError, match="at least 2"):
        RenyiELBO(alpha=0.0, num_particles=1)
    with pytest.raises(ConfigError, match="dreg"):
        RenyiELBO(alpha=0.5, dreg=True)
    with pytest.raises(ConfigError, match="at least 2"):
        TraceTailAdaptive_ELBO(num_particles=1)
    with pytest.raises(ConfigError, match="vectorize_particles"):
        TraceTailAdaptive_ELBO(4, vectorize_particles=False)
    with pytest.raises(ConfigError, match="negative"):
        TraceTailAdaptive_ELBO(4, tail_adaptive_beta=0.5)


def test_tail_adaptive_weights_follow_each_particles_rank():
    """``gamma_k ∝ rank_k^beta`` with ranks ascending in the weight: for log weights
    (5, 1, 3) the ranks are (3, 1, 2), so gamma ∝ (1/3, 1, 1/2) at beta = -1, (1/9, 1, 1/4)
    at beta = -2 (hand computation)."""
    log_w = torch.tensor([5.0, 1.0, 3.0])
    got = TraceTailAdaptive_ELBO(3).rank_weights(log_w)
    assert torch.allclose(got, torch.tensor([1 / 3, 1.0, 1 / 2]) / (11 / 6))
    got = TraceTailAdaptive_ELBO(3, tail_adaptive_beta=-2.0).rank_weights(log_w)
    assert torch.allclose(got, torch.tensor([1 / 9, 1.0, 1 / 4]) / (1 / 9 + 1 + 1 / 4))


def test_tail_adaptive_fit_reaches_the_exact_posterior():
    """From a guide 2 sds off and 2x too wide, 1,500 steps of the tail-adaptive gradient (16
    particles, lr 0.02) reach the conjugate posterior: means within 0.15 posterior sds and
    sds within 15 % (Adam's stationary noise at this rate is a few hundredths of an sd; a
    fixed point elsewhere, as with the ranks reversed, sits 0.4-0.7 sds off)."""
    torch.manual_seed(3)
    model, batch, mean, sd, _ = setup()
    guide = guide_at(model, mean, sd, 2.0, shift=2.0)
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.02), TraceTailAdaptive_ELBO(16))
    for _ in range(1500):
        svi.step(batch)
    q = guide.get_posterior()
    assert ((q.mean.detach() - mean).abs() / sd).max() < 0.15
    ratio = q.stddev.detach() / sd
    assert ((ratio - 1).abs()).max() < 0.15


def test_renyi_trains_with_svi_and_svimodule_and_reloads(tmp_path):
    """The IWAE objective in SVI (compiled too) and in SVIModule; a checkpoint rebuilds it
    with its arguments."""
    torch.manual_seed(5)
    model, batch, mean, sd, _ = setup()
    guide = guide_at(model, mean, sd, 2.0, shift=2.0)
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.02), RenyiELBO(0.0, 8, dreg=True),
              compile=True)
    for _ in range(300):
        svi.step(batch)
    assert ((guide.median()["mu"] - mean).abs() / sd).max() < 0.5
    module = SVIModule(model, guide_at(model, mean, sd, 1.0), RenyiELBO(0.5, 4), lr=0.01)
    trainer = short_trainer(tmp_path, 5)
    trainer.fit(module, datamodule=TensorDataModule(batch))
    trainer.save_checkpoint(tmp_path / "r.ckpt")
    back = SVIModule.load_from_checkpoint(tmp_path / "r.ckpt", trusted=("test_psis",))
    assert isinstance(back.elbo, RenyiELBO) and back.elbo.alpha == 0.5 and back.elbo.num_particles == 4


def test_tail_adaptive_trains_compiled_and_in_svimodule(tmp_path):
    """The tail-adaptive objective under SVI(compile=True) and in SVIModule; a checkpoint
    rebuilds it with its arguments."""
    torch.manual_seed(6)
    model, batch, mean, sd, _ = setup()
    guide = guide_at(model, mean, sd, 2.0, shift=2.0)
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.02), TraceTailAdaptive_ELBO(8), compile=True)
    losses = [svi.step(batch) for _ in range(200)]
    assert losses[-1] < losses[0]
    module = SVIModule(model, guide_at(model, mean, sd, 1.0), TraceTailAdaptive_ELBO(4, tail_adaptive_beta=-0.5),
                       lr=0.01)
    trainer = short_trainer(tmp_path, 5)
    trainer.fit(module, datamodule=TensorDataModule(batch))
    trainer.save_checkpoint(tmp_path / "t.ckpt")
    back = SVIModule.load_from_checkpoint(tmp_path / "t.ckpt", trusted=("test_psis",))
    assert isinstance(back.elbo, TraceTailAdaptive_ELBO)
    assert back.elbo.tail_adaptive_beta == -0.5 and back.elbo.num_particles == 4
