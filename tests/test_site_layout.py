"""What users read back has each site's own shape (Pyro's and NumPyro's): ``sample_shape``,
then the dims of the site's own plates counted from the right, then its event shape."""

import pytest
import torch
from torch import distributions as dist

from quivers import Deterministic, Latent, MonadicProgram, Observed, Plate
from quivers.guides import (
    AutoDeltaGuide,
    AutoDiagonalNormal,
    AutoGuideList,
    AutoIAFNormal,
    AutoLaplaceApproximation,
    AutoMultivariateNormal,
    AutoNormalGuide,
)
from quivers.infer import Predictive
from quivers.lightning.summary import posterior_summary


class Layouts(MonadicProgram):
    """Plates at dims -1 (cols, 4) and -2 (rows, 3)."""

    def __init__(self):
        super().__init__()
        cols = Plate("cols", size=4, dim=-1)
        rows = Plate("rows", size=3, dim=-2)
        self.declare(
            Latent("a", lambda: dist.Normal(0.0, 1.0)),                                    # ()
            Latent("w", lambda: dist.Independent(dist.Normal(torch.zeros(2), 1.0), 1)),  # (2,)
            Latent("r", lambda: dist.Normal(0.0, 1.0), plate=rows),                      # (3, 1)
            Latent("c", lambda: dist.Normal(0.0, 1.0), plate=cols),                      # (4,)
            Deterministic("rc", lambda r, c: r + c, plate=(rows, cols)),                 # (3, 4)
            Deterministic("aa", lambda a: 2 * a),                                         # ()
            Observed("y", lambda a, rc, w: dist.Normal(a + rc + w.sum(-1), 1.0), plate=(rows, cols)),
        )


SHAPES = {"a": (), "w": (2,), "r": (3, 1), "c": (4,), "rc": (3, 4), "aa": ()}
Y = {"y": torch.randn(3, 4)}


@pytest.mark.parametrize("cls", [AutoNormalGuide, AutoDeltaGuide, AutoDiagonalNormal, AutoMultivariateNormal,
                                 AutoIAFNormal, AutoLaplaceApproximation])
def test_summaries_have_each_sites_own_shape(cls):
    torch.manual_seed(0)
    model = Layouts()
    guide = cls(model)
    if cls is AutoLaplaceApproximation:
        guide.fit_map(Y)
    median = guide.median(Y)
    assert {k: tuple(v.shape) for k, v in median.items()} == SHAPES
    q = guide.quantiles([0.1, 0.5, 0.9], Y)
    assert {k: tuple(v.shape) for k, v in q.items()} == {k: (3,) + s for k, s in SHAPES.items()}
    assert {k: tuple(v.shape) for k, v in guide.quantiles(0.5, Y).items()} == SHAPES  # a scalar adds no dim
    draws = guide.sample_posterior(Y, (5,))
    assert {k: tuple(v.shape) for k, v in draws.items()} == {k: (5,) + s for k, s in SHAPES.items()}
    assert {k: tuple(v.shape) for k, v in guide.sample_posterior(Y).items()} == SHAPES
    pred = Predictive(model, guide, num_samples=6)(Y)
    assert {k: tuple(v.shape) for k, v in pred.items()} == {k: (6,) + s for k, s in {**SHAPES, "y": (3, 4)}.items()}


def test_trace_layout_stays_inside_traces():
    model = Layouts()
    guide = AutoNormalGuide(model)
    z = guide.rsample(Y, (5,))
    assert z["a"].shape == (5, 1, 1) and z["w"].shape == (5, 1, 1, 2) and z["r"].shape == (5, 3, 1)
    assert z["c"].shape == (5, 1, 4)
    tr = model.trace(Y, z)
    assert tr["rc"].value.shape == (5, 3, 4) and tr.log_joint().shape == (5,)


def test_prior_draws_and_the_run_summary_use_the_site_layout():
    model = Layouts()
    s = model.sample(None, (7,))
    assert {k: tuple(v.shape) for k, v in s.items()} == {k: (7,) + v for k, v in {**SHAPES, "y": (3, 4)}.items()}
    rows = posterior_summary(model, AutoNormalGuide(model), Y, num_samples=50)
    names = [r["site"] for r in rows]
    assert names[:3] == ["a", "w[0]", "w[1]"] and "r[2]" in names and "rc[2,3]" in names and "aa" in names


def test_a_guide_list_and_a_user_guide_read_back_in_the_site_layout():
    model = Layouts()
    guide = AutoGuideList(model)
    guide.append(AutoDeltaGuide(model, observed_names=["r", "c"]))
    guide.append(AutoNormalGuide(model, observed_names=["a", "w"]))
    assert {k: tuple(v.shape) for k, v in guide.median(Y).items()} == SHAPES


def test_latent_values_given_in_either_layout_condition_the_site():
    model = Layouts()
    guide = AutoNormalGuide(model, observed_names=["a"])
    for a in (torch.tensor(0.7), torch.tensor([[0.7]])):
        tr = model.trace({**Y, "a": a}, guide.rsample({**Y, "a": a}))
        assert tr["a"].kind == "observed" and tr["a"].value.shape == (1, 1)
