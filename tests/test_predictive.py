import pytest
import torch
from torch import distributions as dist
from user_guides import DataMeanGuide

from quivers import Deterministic, Latent, MonadicProgram, Observed, Param, Plate
from quivers.errors import BatchError
from quivers.guides import AutoDeltaGuide, AutoNormalGuide, init_to_value
from quivers.infer import SVI, Predictive, Trace_ELBO


class Reg(MonadicProgram):
    def __init__(self, n=30):
        super().__init__()
        data = Plate("data", size=n)
        self.declare(
            Latent("w", lambda: dist.Normal(0.0, 5.0)),
            Param("sigma", torch.tensor(1.0), dist.constraints.positive),
            Deterministic("mean", lambda w, x: w * x, plate=data),
            Observed("y", lambda mean, sigma: dist.Normal(mean, sigma), plate=data),
        )


def test_posterior_and_prior_predictive_shapes_and_values():
    x = torch.linspace(-1, 1, 30)
    y = 2.0 * x + 0.1 * torch.randn(30)
    model = Reg()
    guide = AutoNormalGuide(model)
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.05), Trace_ELBO(num_particles=4))
    for _ in range(1500):
        svi.step({"x": x, "y": y})
    # the model's Param was added to the optimizer and learned the noise level
    assert model.param_value("sigma").item() < 0.3
    post = Predictive(model, guide, num_samples=200)({"x": x, "y": y})
    assert set(post) == {"w", "mean", "y"} and post["y"].shape == (200, 30)  # every site, as Pyro's
    assert (post["y"].mean(0) - 2.0 * x).abs().max() < 0.2
    prior = Predictive(model, num_samples=7, return_sites=["w", "y"])({"x": x})
    assert prior["w"].shape == (7,) and prior["y"].shape == (7, 30)  # each site's own shape


def test_deterministic_without_latent_parents_is_broadcast_over_draws():
    from quivers import MonadicProgram as MP

    class M(MP):
        def __init__(self):
            super().__init__()
            self.declare(
                Deterministic("const", lambda x: 2 * x),
                Latent("a", lambda: dist.Normal(0.0, 1.0)),
                Deterministic("shifted", lambda a, const: a.unsqueeze(-1) + const),
            )

    model = M()
    out = Predictive(model, AutoNormalGuide(model), num_samples=5)({"x": torch.tensor([1.0, 2.0])})
    assert out["const"].shape == (5, 2) and torch.equal(out["const"][3], torch.tensor([2.0, 4.0]))
    assert out["shifted"].shape == (5, 2)


# ---------------------------------------------------------------------------- the whole batch
class DataSized(MonadicProgram):
    """A plate with no declared size: its extent comes from the data."""

    def __init__(self):
        super().__init__()
        self.declare(
            Latent("mu", lambda: dist.Normal(0.0, 1.0)),
            Observed("y", lambda mu: dist.Normal(mu, 1.0), plate=Plate("data")),
        )


def test_a_plate_sized_by_the_data_predicts_every_row():
    model = DataSized()
    guide = AutoNormalGuide(model)
    out = Predictive(model, guide, num_samples=50)({"y": torch.randn(17)})
    assert out["y"].shape == (50, 17) and out["mu"].shape == (50,)


def test_a_guide_that_reads_the_data_gets_the_whole_batch():
    model = DataSized()
    y = torch.full((5,), 3.0)
    out = Predictive(model, DataMeanGuide(model), num_samples=400)({"y": y})
    assert out["y"].shape == (400, 5)
    # mu ~ N(3, 0.1) from the guide, y ~ N(mu, 1): the predictive mean is 3 (se 0.05)
    assert float(out["y"].mean()) == pytest.approx(3.0, abs=0.2)


def test_a_minibatch_of_a_plate_with_a_declared_size_predicts_its_rows():
    from quivers.datasets import simulate_varying_intercepts
    from quivers.models import VaryingIntercepts

    d = simulate_varying_intercepts(1000, 5, seed=0)
    model = VaryingIntercepts(num_groups=5, num_data=1000)
    guide = AutoNormalGuide(model)
    rows = {k: d[k][:64] for k in ("x", "group", "y")}
    out = Predictive(model, guide, num_samples=30)(rows)
    assert out["y"].shape == (30, 64) and out["a"].shape == (30, 5)
    with_indices = Predictive(model, guide, num_samples=30)({**rows, "data": torch.arange(64)})
    assert with_indices["y"].shape == (30, 64)


def test_predictions_follow_the_rows_given():
    class Line(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(
                Latent("w", lambda: dist.Normal(0.0, 1.0)),
                Observed("y", lambda w, x: dist.Normal(w * x, 1e-3), plate=Plate("data", size=100)),
            )

    model = Line()
    guide = AutoDeltaGuide(model, init_loc_fn=init_to_value(values={"w": 2.0}))
    x = torch.tensor([1.0, -3.0, 0.5])
    out = Predictive(model, guide, num_samples=4)({"x": x})  # 3 rows of a plate of 100
    assert torch.allclose(out["y"], 2.0 * x.expand(4, 3), atol=0.01)


def test_predictive_from_posterior_samples():
    """NumPyro's ``Predictive(model, posterior_samples=...)``: draws in the site layout (or
    the trace layout), deterministic entries recomputed, missing latents from the prior."""
    model = Reg()
    x = torch.linspace(-1, 1, 30)
    w = torch.tensor([1.0, 2.0, 3.0])
    out = Predictive(model, posterior_samples={"w": w, "mean": torch.zeros(3, 30)})({"x": x})
    assert set(out) == {"mean", "y"} and out["y"].shape == (3, 30)
    assert torch.allclose(out["mean"], w[:, None] * x)
    assert torch.equal(Predictive(model, posterior_samples={"w": w[:, None]})({"x": x})["mean"], out["mean"])

    class Two(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Latent("a", lambda: dist.Normal(0.0, 1.0)), Latent("b", lambda a: dist.Normal(a, 1e-3)))

    drawn = Predictive(Two(), posterior_samples={"a": torch.full((6,), 5.0)})(None)
    assert set(drawn) == {"b"} and torch.allclose(drawn["b"], torch.full((6,), 5.0), atol=0.01)


@pytest.mark.parametrize("kwargs,match", [
    ({"posterior_samples": {"nope": torch.zeros(3)}}, "not sites"),
    ({"posterior_samples": {"w": torch.zeros(3)}, "num_samples": 4}, "num_samples=4"),
    ({"num_samples": 0}, "positive int, got"),
    ({"num_samples": 2.5}, "positive int, got"),
])
def test_predictive_bad_arguments(kwargs, match):
    with pytest.raises(BatchError, match=match):
        Predictive(Reg(), **kwargs)


def test_predictive_guide_and_samples_together_is_an_error():
    model = Reg()
    with pytest.raises(BatchError, match="not both"):
        Predictive(model, AutoNormalGuide(model), posterior_samples={"w": torch.zeros(3)})
