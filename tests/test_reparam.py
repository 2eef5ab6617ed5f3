"""Reparameterisers (``LocScaleReparam``, ``TransformReparam``) via ``model.reparam``: the
log joint against hand-written twins, the site's distribution unchanged, and a fit of
the centred eight schools against posteriordb's reference."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
import torch.distributions as dist

from quivers import Latent, MonadicProgram, Observed, Plate
from quivers.errors import ModelSpecError
from quivers.guides import AutoNormalGuide
from quivers.infer import SVI
from quivers.program import LocScaleReparam, TransformReparam

Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
BATCH = {"y": Y, "sigma": SIGMA}
MU, TAU, W = torch.tensor(1.3), torch.tensor(2.1), torch.linspace(-1.0, 1.0, 8)
REFERENCE = (pathlib.Path(__file__).resolve().parents[2] / "shared" / "posteriordb"
             / "eight_schools-eight_schools_noncentered" / "summary.json")


class CentredSchools(MonadicProgram):
    """The centred eight schools: theta_j ~ N(mu, tau) directly."""

    def __init__(self):
        super().__init__()
        schools = Plate("schools", size=8)
        self.declare(
            Latent("mu", lambda: dist.Normal(0.0, 5.0)),
            Latent("tau", lambda: dist.HalfCauchy(5.0)),
            Latent("theta", lambda mu, tau: dist.Normal(mu, tau), plate=schools),
            Observed("y", lambda theta, sigma: dist.Normal(theta, sigma), plate=schools),
        )


def _rest(theta):
    return (dist.Normal(0.0, 5.0).log_prob(MU) + dist.HalfCauchy(5.0).log_prob(TAU)
            + dist.Normal(theta, SIGMA).log_prob(Y).sum())


@pytest.mark.parametrize("c", [0.0, 0.5, 1.0])
def test_loc_scale_reparam_log_joint_matches_the_hand_written_twin(c):
    """theta_decentered ~ N(c mu, tau^c), theta = mu + tau^(1-c) (theta_decentered - c mu):
    c = 0 is the non-centred model, c = 1 the centred one."""
    model = CentredSchools().reparam({"theta": LocScaleReparam(centered=c)})
    assert model.latent_names == ["mu", "tau", "theta_decentered"]
    tr = model.trace(BATCH, {"mu": MU, "tau": TAU, "theta_decentered": W})
    theta = MU + TAU ** (1 - c) * (W - c * MU)
    torch.testing.assert_close(tr["theta"].value.reshape(-1), theta)
    hand = _rest(theta) + dist.Normal(c * MU, TAU ** c).log_prob(W).sum()
    torch.testing.assert_close(tr.log_joint(), hand)


def test_learned_centeredness_is_a_parameter_of_the_program():
    model = CentredSchools().reparam({"theta": LocScaleReparam()})
    c = model.param_value("theta_centered")
    assert c.shape == (8,) and torch.equal(c, torch.full((8,), 0.5))
    lp = model.log_joint(BATCH, {"mu": MU, "tau": TAU, "theta_decentered": W})
    theta = MU + TAU ** 0.5 * (W - 0.5 * MU)
    torch.testing.assert_close(lp, _rest(theta) + dist.Normal(0.5 * MU, TAU ** 0.5).log_prob(W).sum())
    (grad,) = torch.autograd.grad(lp, [model._params["theta_centered"]])
    assert bool((grad != 0).all())


def test_the_site_keeps_its_distribution():
    """x ~ StudentT(3, 2, 0.5) through LocScaleReparam(0.3) (df kept): prior draws of x
    have StudentT's quartiles (2 +- 0.5 * 0.765)."""
    class T(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Latent("x", lambda: dist.StudentT(3.0, 2.0, 0.5)))

    torch.manual_seed(0)
    x = T().reparam({"x": LocScaleReparam(0.3)}).sample(sample_shape=(40000,))["x"]
    q = torch.quantile(x, torch.tensor([0.25, 0.5, 0.75]))
    # 40,000 draws: the quartiles' standard errors are ~0.003; 0.02 is ~6 of them
    torch.testing.assert_close(q, torch.tensor([2 - 0.5 * 0.7649, 2.0, 2 + 0.5 * 0.7649]), atol=0.02, rtol=0)


def test_transform_reparam_draws_the_base_and_pushes_it_through():
    class LogNormalModel(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Latent("s", lambda: dist.LogNormal(0.3, 0.8)),
                         Observed("y", lambda s: dist.Normal(0.0, s)))

    model = LogNormalModel()
    rep = model.reparam({"s": TransformReparam()})
    assert rep.latent_names == ["s_base"]
    b = torch.tensor(0.4)
    y = {"y": torch.tensor(1.5)}
    tr = rep.trace(y, {"s_base": b})
    torch.testing.assert_close(tr["s"].value, b.exp())
    # the base's density is the original's times the Jacobian |ds/db| = s
    torch.testing.assert_close(tr.log_joint(), model.log_joint(y, {"s": b.exp()}) + b)


def test_centred_eight_schools_non_centred_by_reparam_fits_the_reference():
    """The centred model is hard for a mean-field guide; non-centred by LocScaleReparam(0),
    the default fit recovers the reference means of mu and theta within 0.3 reference sd
    (the CLI test's tolerance for mean-field VI on this posterior)."""
    torch.manual_seed(0)
    model = CentredSchools().reparam({"theta": LocScaleReparam(centered=0.0)})
    guide = AutoNormalGuide(model)
    SVI(model, guide).run(BATCH, progress_bar=False)
    draws = guide.sample_posterior(BATCH, (4000,))
    ref = json.loads(REFERENCE.read_text())["parameters"]
    z = abs(float(draws["mu"].mean()) - ref["mu"]["mean"]) / ref["mu"]["sd"]
    assert z < 0.3
    for j in range(8):
        r = ref[f"theta[{j + 1}]"]
        assert abs(float(draws["theta"][:, j].mean()) - r["mean"]) / r["sd"] < 0.3, j


@pytest.mark.parametrize("call, match", [
    (lambda m: m.reparam({"y": TransformReparam()}), r"reparam: site 'y' is Observed; reparam takes latent"),
    (lambda m: m.reparam({"theta": "loc-scale"}), r"reparam: site 'theta': expected a Reparam"),
    (lambda m: LocScaleReparam(centered=1.5), r"centered must be None or a number in \[0, 1\], got 1.5"),
    (lambda m: m.reparam({"tau": LocScaleReparam(0.0)}).log_joint(BATCH, {"mu": MU, "tau_decentered": TAU,
                                                                           "theta": W}),
     r"LocScaleReparam: site 'tau' has a HalfCauchy prior, which is not a location-scale family"),
    (lambda m: m.reparam({"mu": TransformReparam()}).log_joint(BATCH, {"mu_base": MU, "tau": TAU, "theta": W}),
     r"TransformReparam: site 'mu' has a Normal prior, not a TransformedDistribution"),
])
def test_bad_reparam_raises_naming_the_site(call, match):
    with pytest.raises(ModelSpecError, match=match):
        call(CentredSchools())
