"""median / quantiles / init strategies / sample_posterior of the built-in guides."""

import math

import pytest
import torch
from torch import distributions as dist

from quivers import ImproperUniform, Latent, MonadicProgram, Observed
from quivers.errors import GuideError
from quivers.guides import (
    AutoDeltaGuide,
    AutoNormalGuide,
    init_to_feasible,
    init_to_mean,
    init_to_median,
    init_to_sample,
    init_to_uniform,
    init_to_value,
)


class ThreeSites(MonadicProgram):
    def __init__(self):
        super().__init__()
        self.declare(
            Latent("a", lambda: dist.Normal(1.0, 2.0)),
            Latent("b", lambda: dist.LogNormal(0.5, 0.3)),
            Latent("c", lambda: dist.Beta(3.0, 2.0)),
        )


VALUES = {"a": torch.tensor(-0.7), "b": torch.tensor(2.5), "c": torch.tensor(0.3)}


@pytest.mark.parametrize("guide_cls", [AutoNormalGuide, AutoDeltaGuide])
def test_init_to_value_sets_median_exactly(guide_cls):
    guide = guide_cls(ThreeSites(), init_loc_fn=init_to_value(values=VALUES))
    med = guide.median()
    for k, v in VALUES.items():
        # exact up to one float32 round trip through biject_to and its inverse
        assert torch.allclose(med[k], v, rtol=1e-6, atol=1e-6), k


def test_median_matches_sampled_median_on_normal_lognormal_beta():
    guide = AutoNormalGuide(ThreeSites(), init_scale=0.5, init_loc_fn=init_to_value(values=VALUES))
    draws = guide.sample_posterior(None, (200000,))
    med = guide.median()
    for k in VALUES:
        # MC error of a sample median with 2e5 draws is ~3e-3 sd; 0.01 is a safe margin
        assert torch.allclose(draws[k].median(), med[k], atol=0.01), k


def test_quantiles_ordered_and_median_at_half():
    guide = AutoNormalGuide(ThreeSites(), init_scale=0.5)
    q = guide.quantiles([0.05, 0.25, 0.5, 0.75, 0.95])
    med = guide.median()
    for k, v in q.items():
        assert v.shape == (5,) + med[k].shape
        assert (v[1:] >= v[:-1]).all(), k
        assert torch.allclose(v[2], med[k]), k
    draws = guide.sample_posterior(None, (200000,))
    # the 5% quantile matches the empirical one to MC error (~0.01 sd)
    assert torch.allclose(torch.quantile(draws["b"], 0.05), q["b"][0], rtol=0.02)


def test_delta_quantiles_are_the_point():
    guide = AutoDeltaGuide(ThreeSites(), init_loc_fn=init_to_value(values=VALUES))
    q = guide.quantiles([0.1, 0.9])
    assert torch.allclose(q["b"][0], q["b"][1])


@pytest.mark.parametrize(
    "init", [init_to_median, init_to_mean, init_to_feasible, init_to_uniform, init_to_sample,
             init_to_median(num_samples=5), init_to_uniform(radius=0.5)],
)
def test_init_strategies_feasible(init):
    guide = AutoNormalGuide(ThreeSites(), init_loc_fn=init)
    med = guide.median()
    assert 0 < med["c"].item() < 1 and med["b"].item() > 0


def test_init_to_mean_and_feasible_values():
    guide = AutoDeltaGuide(ThreeSites(), init_loc_fn=init_to_mean)
    assert math.isclose(guide.median()["c"].item(), 0.6, rel_tol=1e-5)
    guide = AutoDeltaGuide(ThreeSites(), init_loc_fn=init_to_feasible)
    assert guide.median()["b"].item() == pytest.approx(1.0) and guide.median()["c"].item() == pytest.approx(0.5)


def test_init_to_value_errors_before_building():
    with pytest.raises(GuideError, match="'b'.*support"):
        AutoNormalGuide(ThreeSites(), init_loc_fn=init_to_value(values={"b": torch.tensor(-1.0)}))
    with pytest.raises(GuideError, match="'a'.*shape"):
        AutoNormalGuide(ThreeSites(), init_loc_fn=init_to_value(values={"a": torch.zeros(3)}))


def test_improper_uniform_prior_initialises_feasibly():
    class Flat(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(
                Latent("s", lambda: ImproperUniform(dist.constraints.positive)),
                Observed("y", lambda s: dist.Normal(0.0, s)),
            )

    guide = AutoNormalGuide(Flat())  # init_to_median falls back to feasible
    assert guide.median()["s"].item() == pytest.approx(1.0)
    with pytest.raises(NotImplementedError):
        Flat().sample()


def test_all_parameters_exist_after_init_and_state_dict_round_trips():
    g1 = AutoNormalGuide(ThreeSites())
    assert list(g1.state_dict()) == ["locs.a", "locs.b", "locs.c", "scales_raw.a", "scales_raw.b", "scales_raw.c"]
    assert {n for n, _ in g1.named_parameters()} == {"locs.flat", "scales_raw.flat"}  # the global sites, flat
    g2 = AutoNormalGuide(ThreeSites(), init_loc_fn=init_to_feasible)
    g2.load_state_dict(g1.state_dict())
    assert all(torch.equal(g1.median()[k], g2.median()[k]) for k in VALUES)


def test_quantiles_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        AutoNormalGuide(ThreeSites()).quantiles([0.5, 1.5])


def test_observed_names_condition_latent_sites_on_batch_values():
    from quivers.infer import SVI, Trace_ELBO

    class AB(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(
                Latent("a", lambda: dist.Normal(0.0, 1.0)),
                Latent("b", lambda a: dist.Normal(a, 1.0)),
                Observed("y", lambda b: dist.Normal(b, 1.0)),
            )

    model = AB()
    guide = AutoNormalGuide(model, observed_names=["b"])
    assert guide.latent_names == ["a"]
    batch = {"b": torch.tensor(2.0), "y": torch.tensor(0.0)}
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.05), Trace_ELBO(num_particles=8))
    for _ in range(1500):
        svi.step(batch)
    # with b observed, p(a | b) = N(b / 2, 1 / sqrt(2)): y is independent of a given b
    assert abs(guide.median()["a"].item() - 1.0) < 0.1
    assert model.trace(batch, guide.rsample(batch, (3,)))["b"].kind == "observed"
    with pytest.raises(GuideError, match="nope"):
        AutoNormalGuide(model, observed_names=["nope"])


def test_init_to_value_naming_a_site_that_is_not_latent_is_an_error():
    from quivers.guides import AutoNormalGuide, init_to_median, init_to_value
    from quivers.models import EightSchools

    model = EightSchools()
    with pytest.raises(GuideError, match=r"init_to_value: \['sigma'\] are not latent sites of EightSchools"):
        AutoNormalGuide(model, init_loc_fn=init_to_value(values={"mu": 1.0, "sigma": 2.0}))
    nested = init_to_value(values={"mu": 1.0}, fallback=init_to_value(values={"thetaa": 0.0}, fallback=init_to_median))
    with pytest.raises(GuideError, match=r"\['thetaa'\]"):
        AutoNormalGuide(model, init_loc_fn=nested)
