"""AutoStructured: exact family on a Gaussian tree, densities, checks, checkpoints."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers import fit
from test_gaussian_guides import Tree
from torch import distributions as dist
from torch import nn

from quivers.datasets import EightSchoolsData
from quivers.errors import GuideError
from quivers.guides import AutoLaplaceApproximation, AutoStructured
from quivers.lightning import SVIModule
from quivers.models import EightSchools


def test_structured_tree_recovers_exact_posterior():
    """g: normal, z: mvn, z depends linearly on g. The tree's posterior is Gaussian with
    E[z | g] linear in g and Cov[z | g] constant, so this family contains it exactly."""
    torch.manual_seed(2)
    model = Tree()
    y = torch.randn(3, 4) + torch.tensor([[-1.0], [0.0], [2.0]])
    guide = AutoStructured(model, conditionals={"g": "normal", "z": "mvn"}, dependencies={"z": {"g": "linear"}})
    fit(model, guide, {"y": y}, steps=2500)
    mean, cov = model.posterior(y)
    draws = guide.sample_posterior({"y": y}, (40000,))
    x = torch.cat([draws["g"].reshape(-1, 1), draws["z"].reshape(-1, 3)], -1).double()
    q_mean, q_cov = x.mean(0), torch.cov(x.T)
    # same tolerances as the full-rank guides on this tree (sds 0.4 to 1.0); 40k draws add
    # a Monte Carlo error below 0.01 sd on means and 0.5% on sds
    assert (q_mean - mean).abs().max() < 0.05
    assert ((q_cov.diagonal().sqrt() / cov.diagonal().sqrt()) - 1).abs().max() < 0.05
    corr = lambda c: c / torch.outer(c.diagonal().sqrt(), c.diagonal().sqrt())  # noqa: E731
    assert (corr(q_cov) - corr(cov)).abs().max() < 0.05
    # the exact median (Gaussian marginals) agrees with the draws' median
    med = guide.median()
    assert torch.allclose(med["g"], draws["g"].median(0).values, atol=0.03)


class _ShiftNet(nn.Module):
    """A non-linear dependency: tanh of the upstream value, mapped to the downstream size."""

    def __init__(self, up, down):
        super().__init__()
        self.lin = nn.Linear(up.numel, down.numel)

    def forward(self, x):
        return torch.tanh(self.lin(x))


class _StudentT(nn.Module):
    """A custom conditional: independent Student-t over the site's unconstrained value."""

    def __init__(self, site, init_loc):
        super().__init__()
        self.loc = nn.Parameter(init_loc)
        self.log_scale = nn.Parameter(torch.full_like(init_loc, -1.0))

    def forward(self):
        return dist.Independent(dist.StudentT(4.0, self.loc, self.log_scale.exp()), 1)


@pytest.mark.parametrize("conditionals,dependencies", [
    ("mvn", "linear"),
    ("normal", None),
    ({"mu": "delta", "tau": _StudentT, "eta": "mvn"}, {"eta": {"mu": "linear", "tau": _ShiftNet}}),
])
def test_log_prob_matches_rsample_and_log_prob(conditionals, dependencies):
    torch.manual_seed(0)
    model = EightSchools()
    guide = AutoStructured(model, conditionals=conditionals, dependencies=dependencies)
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z, lq = guide.rsample_and_log_prob(None, (7,))
    assert z["eta"].shape == (7, 8) and z["tau"].shape == (7, 1)
    assert bool((z["tau"] > 0).all())
    assert torch.allclose(guide.log_prob(None, z), lq, atol=1e-4)


def test_all_delta_is_the_unconstrained_map_objective():
    """Every site a delta: ``log q = -log|det J|``, as AutoLaplaceApproximation's point."""
    model = EightSchools()
    guide = AutoStructured(model, conditionals="delta", dependencies=None)
    lap = AutoLaplaceApproximation(model)
    with torch.no_grad():
        lap.loc.normal_()
        for s in guide.registry:
            guide.conditionals[s.name].loc.copy_(lap.loc[s.offset: s.offset + s.numel])
    (z1, l1), (z2, l2) = guide.rsample_and_log_prob(None, (3,)), lap.rsample_and_log_prob(None, (3,))
    assert all(torch.equal(z1[k], z2[k]) for k in z1)
    assert torch.allclose(l1, l2)
    assert torch.allclose(guide.latent_median()["tau"], lap.latent_median()["tau"])


def test_median_falls_back_to_draws_with_custom_parts():
    torch.manual_seed(1)
    guide = AutoStructured(EightSchools(), conditionals={"tau": _StudentT})
    assert guide._unconstrained_median() is None
    assert guide.median()["eta"].shape == (8,)


@pytest.mark.parametrize("kwargs,match", [
    ({"conditionals": {"sigma": "normal"}}, r"conditionals name unknown latent sites \['sigma'\]"),
    ({"conditionals": "gaussian"}, r"conditional of site 'mu' must be one of \['delta', 'mvn', 'normal'\]"),
    ({"dependencies": {"mu": {"eta": "linear"}}}, r"'mu' may only depend on earlier sites, but 'eta' is declared"),
    ({"dependencies": {"tau": {"tau": "linear"}}}, r"'tau' may only depend on earlier sites, but 'tau' is itself"),
    ({"dependencies": {"eta": {"theta": "linear"}}}, r"'eta' depends on unknown latent site 'theta'"),
    ({"dependencies": {"eta": {"mu": "quadratic"}}}, r"dependency of 'eta' on 'mu' must be 'linear'"),
    ({"dependencies": "full"}, r"dependencies must be 'linear', a dict or None"),
    ({"conditionals": {"eta": lambda s, loc: _StudentT(s, loc[:2])}}, r"site 'eta' must have batch_shape \(\)"),
    ({"init_scale": 0.0}, "init_scale must be a finite number > 0"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(GuideError, match=match):
        AutoStructured(EightSchools(), **kwargs)


def test_structured_checkpoint_reloads_without_arguments(tmp_path):
    L.seed_everything(0)
    model = EightSchools()
    guide = AutoStructured(model, conditionals={"mu": "normal", "tau": "normal", "eta": "mvn"},
                           dependencies={"eta": {"mu": "linear", "tau": "linear"}})
    module = SVIModule(model, guide, lr=0.02)
    trainer = L.Trainer(max_steps=5, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(module, EightSchoolsData())
    path = tmp_path / "structured.ckpt"
    trainer.save_checkpoint(path)
    back = SVIModule.load_from_checkpoint(path)
    assert isinstance(back.guide, AutoStructured)
    for k, v in module.guide.state_dict().items():
        assert torch.equal(back.guide.state_dict()[k], v), k


def test_dependencies_given_in_any_order_are_sorted_by_the_model():
    """The parameters (and so optimizer state and checkpoints) come in model order whatever
    order the dicts list them in."""
    model = EightSchools()
    forward = {"tau": {"mu": "linear"}, "eta": {"mu": "linear", "tau": "linear"}}
    backward = {"eta": {"tau": "linear", "mu": "linear"}, "tau": {"mu": "linear"}}
    names = [[n for n, _ in AutoStructured(model, dependencies=d).named_parameters()] for d in (forward, backward)]
    assert names[0] == names[1]
    assert [n for n in names[0] if n.startswith("dependencies")] == [
        "dependencies.tau.mu.weight", "dependencies.eta.mu.weight", "dependencies.eta.tau.weight"]
