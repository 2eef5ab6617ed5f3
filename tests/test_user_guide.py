"""A user's Guide subclass works with the objectives, SVI and Predictive."""

import torch
from torch import distributions as dist
from torch import nn

from quivers import Latent, MonadicProgram, Observed, Plate
from quivers.guides import Guide
from quivers.infer import SVI, Predictive, Trace_ELBO


class Model(MonadicProgram):
    def __init__(self):
        super().__init__()
        data = Plate("data", size=20)
        self.declare(
            Latent("m", lambda: dist.Normal(0.0, 10.0)),
            Latent("s", lambda: dist.LogNormal(0.0, 1.0)),
            Observed("y", lambda m, s: dist.Normal(m, s), plate=data),
        )


class MyGuide(Guide):
    """Hand-written mean-field guide: Normal for m, LogNormal for s."""

    def __init__(self):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(2))
        self.log_scale = nn.Parameter(torch.zeros(2))

    @property
    def latent_names(self):
        return ["m", "s"]

    def _dists(self):
        scale = self.log_scale.exp()
        return dist.Normal(self.loc[0], scale[0]), dist.LogNormal(self.loc[1], scale[1])

    def rsample(self, batch=None, sample_shape=()):
        qm, qs = self._dists()
        ss = torch.Size(sample_shape)
        return {"m": qm.rsample(ss + (1,)), "s": qs.rsample(ss + (1,))}

    def log_prob(self, batch, sites):
        qm, qs = self._dists()
        return (qm.log_prob(sites["m"]) + qs.log_prob(sites["s"])).sum(-1)


def test_user_guide_trains_and_predicts():
    y = 3.0 + 0.5 * torch.randn(20)
    model, guide = Model(), MyGuide()
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.05), Trace_ELBO(num_particles=4))
    losses = [svi.step({"y": y}) for _ in range(800)]
    assert sum(losses[-50:]) / 50 < sum(losses[:50]) / 50 - 10
    assert abs(guide.loc[0].item() - y.mean().item()) < 0.2
    pred = Predictive(model, guide, num_samples=50)({"y": y})
    assert pred["y"].shape == (50, 20)
    med = guide.median()  # default estimate by sampling
    assert abs(med["m"].item() - guide.loc[0].item()) < 0.1
    assert guide.quantiles([0.1, 0.9])["s"].shape == (2, 1)


class BernoulliModel(MonadicProgram):
    def __init__(self):
        super().__init__()
        self.declare(
            Latent("c", lambda: dist.Bernoulli(0.5)),
            Observed("y", lambda c: dist.Normal(4.0 * c, 1.0)),
        )


class DiscreteGuide(Guide):
    has_rsample = False

    def __init__(self):
        super().__init__()
        self.logit = nn.Parameter(torch.zeros(()))

    @property
    def latent_names(self):
        return ["c"]

    def rsample(self, batch=None, sample_shape=()):
        return {"c": dist.Bernoulli(logits=self.logit).sample(torch.Size(sample_shape))}

    def log_prob(self, batch, sites):
        return dist.Bernoulli(logits=self.logit).log_prob(sites["c"])


def test_score_function_estimator_for_non_reparameterized_guide():
    # y = 4 observed: p(c=1 | y) = N(4;4,1) / (N(4;4,1) + N(4;0,1)) = 1 / (1 + e^-8)
    model, guide = BernoulliModel(), DiscreteGuide()
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.1), Trace_ELBO(num_particles=64))
    for _ in range(300):
        svi.step({"y": torch.tensor(4.0)})
    assert torch.sigmoid(guide.logit).item() > 0.95


def test_a_guide_attribute_named_model_that_is_not_a_program_is_left_alone():
    # check_guide compares guide.model with the model only when it is a MonadicProgram:
    # a user's guide may call its own network "model"
    guide = MyGuide()
    guide.model = nn.Linear(2, 2)
    model = Model()
    SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.01)).step({"y": torch.randn(20)})
    Predictive(model, guide, num_samples=3)({})
