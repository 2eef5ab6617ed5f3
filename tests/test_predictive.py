import torch
from torch import distributions as dist

from quivers import Deterministic, Latent, MonadicProgram, Observed, Param, Plate
from quivers.guides import AutoNormalGuide
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
    assert set(post) == {"mean", "y"} and post["y"].shape == (200, 30)
    assert (post["y"].mean(0) - 2.0 * x).abs().max() < 0.2
    prior = Predictive(model, num_samples=7, return_sites=["w", "y"])({"x": x})
    assert prior["w"].shape == (7, 1) and prior["y"].shape == (7, 30)


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
