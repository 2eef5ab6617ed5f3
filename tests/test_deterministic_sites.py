"""Deterministic sites in what users read: ``sample_posterior``, ``median``, ``quantiles``
(as NumPyro returns them), computed from the latent draws and the batch."""

import torch
from torch import distributions as dist

from quivers import Deterministic, Latent, MonadicProgram, Observed, Plate
from quivers.datasets import EIGHT_SCHOOLS_SIGMA, EIGHT_SCHOOLS_Y
from quivers.guides import AutoDeltaGuide, AutoMultivariateNormal, AutoNormalGuide
from quivers.models import EightSchools

BATCH = {"y": torch.tensor(EIGHT_SCHOOLS_Y), "sigma": torch.tensor(EIGHT_SCHOOLS_SIGMA)}


def _guide():
    torch.manual_seed(0)
    model = EightSchools()
    guide = AutoNormalGuide(model)
    with torch.no_grad():  # a spread-out posterior, so medians of sums differ from sums of medians
        guide.locs["mu"].fill_(4.0)
        guide.locs["tau"].fill_(1.0)
        guide.locs["eta"].normal_()
        for p in guide.scales_raw.values():
            p.fill_(0.5)
    return model, guide


def test_sample_posterior_has_the_deterministic_sites_of_each_draw():
    model, guide = _guide()
    s = guide.sample_posterior(BATCH, (1000,))
    assert set(s) == {"mu", "tau", "eta", "theta"}
    assert s["mu"].shape == (1000,) and s["theta"].shape == (1000, 8)
    assert torch.allclose(s["theta"], s["mu"][:, None] + s["tau"][:, None] * s["eta"])


def test_median_and_quantiles_of_a_deterministic_site_are_its_marginal_ones():
    """theta_j = mu + tau eta_j: its median is estimated from draws, and is not the function
    of the latent medians (which would be silently wrong for a spread posterior)."""
    model, guide = _guide()
    torch.manual_seed(1)
    median = guide.median(BATCH, num_samples=20000)["theta"]
    torch.manual_seed(2)
    draws = guide.sample_posterior(BATCH, (20000,))["theta"]
    reference = draws.median(0).values
    # two independent 20k-draw medians: the largest of 8 differences measured 0.06-0.07 over
    # four seed pairs, so 0.15 is ~2x that
    assert median.shape == (8,) and torch.allclose(median, reference, atol=0.15)
    lat = guide.median(BATCH)
    plug_in = lat["mu"] + lat["tau"] * lat["eta"]
    assert (plug_in - reference).abs().max() > 0.3  # the plug-in value is off by ~0.44: not what we return
    q = guide.quantiles([0.1, 0.9], BATCH, num_samples=20000)["theta"]
    assert q.shape == (2, 8)
    assert torch.allclose(q, torch.quantile(draws, torch.tensor([0.1, 0.9]), dim=0), atol=0.4)
    assert guide.quantiles(0.5, BATCH)["theta"].shape == (8,)


def test_deterministic_sites_that_need_missing_data_are_left_out():
    class Reg(MonadicProgram):
        def __init__(self):
            super().__init__()
            data = Plate("data", size=4)
            self.declare(
                Latent("w", lambda: dist.Normal(0.0, 1.0)),
                Deterministic("w2", lambda w: 2 * w),
                Deterministic("const", lambda: torch.tensor([1.0, 2.0])),
                Deterministic("mean", lambda w, x: w * x, plate=data),
                Observed("y", lambda mean: dist.Normal(mean, 1.0), plate=data),
            )

    model = Reg()
    guide = AutoDeltaGuide(model)
    without = guide.sample_posterior(None, (3,))
    assert set(without) == {"w", "w2", "const"}
    assert without["const"].shape == (3, 2)  # the same in every draw
    x = torch.arange(4.0)
    with_x = guide.sample_posterior({"x": x}, (3,))
    assert with_x["mean"].shape == (3, 4) and torch.allclose(with_x["mean"], with_x["w"][:, None] * x)
    assert guide.median({"x": x})["mean"].shape == (4,)


def test_every_guide_family_returns_them():
    model = EightSchools()
    for guide in (AutoDeltaGuide(model), AutoMultivariateNormal(model)):
        assert "theta" in guide.sample_posterior(BATCH, (2,)) and "theta" in guide.median(BATCH)
        assert guide.quantiles([0.5], BATCH)["theta"].shape == (1, 8)
