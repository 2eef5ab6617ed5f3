"""``FusedStep``: the whole SVI step (loss, gradient, Adam) as one compiled graph, checked
against the eager step it replaces."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch
import torch._dynamo
import torch._inductor.config
from torch import distributions as dist

from quivers import Latent, MonadicProgram, Observed, Param, Plate
from quivers.datasets.real import EIGHT_SCHOOLS_SIGMA, EIGHT_SCHOOLS_Y
from quivers.errors import NonFiniteLossError
from quivers.guides import AutoMultivariateNormal, AutoNormalGuide
from quivers.infer import SVI, IterateAverage, Trace_ELBO, WhitenedAdam
from quivers.infer.fused import fusion_blocker
from quivers.models import EightSchools

pytestmark = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                reason="inductor needs a C++ compiler on CPU")

DATA = {"y": torch.tensor(EIGHT_SCHOOLS_Y), "sigma": torch.tensor(EIGHT_SCHOOLS_SIGMA)}


class ScaledSchools(MonadicProgram):
    """Eight schools (centred) with a learnable multiplier of the standard errors: a
    model parameter the optimizer trains beside the guide's."""

    def __init__(self):
        super().__init__()
        schools = Plate("schools", size=8)
        self.declare(
            Latent("mu", lambda: dist.Normal(0.0, 5.0)),
            Latent("tau", lambda: dist.HalfCauchy(5.0)),
            Latent("theta", lambda mu, tau: dist.Normal(mu, tau), plate=schools),
            Param("noise", torch.tensor(1.0), dist.constraints.positive),
            Observed("y", lambda theta, sigma, noise: dist.Normal(theta, noise * sigma), plate=schools),
        )


def _twins(guide_cls, optim_fn, model_cls=EightSchools):
    """Two identical (model, guide, optimizer) triples, one per path."""
    out = []
    for _ in range(2):
        torch.manual_seed(0)
        model = model_cls()
        guide = guide_cls(model)
        params = [*guide.parameters(), *model.parameters()]
        out.append((model, guide, optim_fn(params)))
    return out


def _whitened(params):
    """A WhitenedAdam with a full matrix on the MVN guide's ``loc``, weight decay on one
    group and plain Adam groups for the rest."""
    loc = params[0]
    d = loc.shape[-1]
    chol = torch.linalg.cholesky(torch.eye(d) + 0.5 * torch.ones(d, d))
    return WhitenedAdam([{"params": [loc], "whiten": chol},
                         {"params": params[1:2], "weight_decay": 0.1},
                         {"params": params[2:]}], lr=0.05)


@pytest.mark.parametrize("case", ["autonormal_adam", "mvn_whitened_with_model_param"])
def test_fused_steps_equal_eager_steps_draw_for_draw(case):
    """With the compiler drawing from torch's own generator (``fallback_random``), ten fused
    steps reproduce ten eager ``optimizer.step()`` steps: the loss of each step, every
    parameter and Adam's moments and step counts, to float32 round-off (the fused update
    computes the bias corrections in float64, eager Adam in Python floats; 1e-5 relative
    is a few hundred ulps after ten steps). The learning rate changes every step (as the
    refine phase of ``SVI.run`` does) without a recompile."""
    if case == "autonormal_adam":
        (m1, g1, o1), (m2, g2, o2) = _twins(AutoNormalGuide, lambda p: torch.optim.Adam(p, lr=0.05))
    else:
        (m1, g1, o1), (m2, g2, o2) = _twins(AutoMultivariateNormal, _whitened, ScaledSchools)
    eager = SVI(m1, g1, o1, Trace_ELBO(num_particles=2))
    torch._dynamo.reset()
    with torch._inductor.config.patch(fallback_random=True), warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*cannot be compiled")  # no fallback
        fused = SVI(m2, g2, o2, Trace_ELBO(num_particles=2), compile=True)
        losses = {}
        for name, svi, optim in (("eager", eager, o1), ("fused", fused, o2)):
            torch.manual_seed(1)
            losses[name] = []
            for i in range(10):
                losses[name].append(svi.step(DATA))
                if name == "fused" and i == 1:  # the first fused step compiled
                    graphs = dict(torch._dynamo.utils.counters["stats"])
                for group in optim.param_groups:
                    group["lr"] = 0.05 * 0.9 ** (i + 1)
    assert fused._fused.failed is None and fused._can_fuse()
    assert dict(torch._dynamo.utils.counters["stats"]) == graphs  # no recompile as the lr changed
    assert losses["fused"] == pytest.approx(losses["eager"], rel=1e-5)
    for (name, a), b in zip([*g1.named_parameters(), *m1.named_parameters()], [*g2.parameters(), *m2.parameters()],
                            strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    s1, s2 = o1.state_dict()["state"], o2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for k in s1:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            # the moments are sums of gradients, which the compiled graph computes with its own
            # summation order: they agree to float32 round-off of the gradient's largest terms
            torch.testing.assert_close(s2[k][key], s1[k][key], rtol=1e-4, atol=1e-6)
    params = [p for group in o2.param_groups for p in group["params"]]
    for p in params:
        p.grad = torch.ones_like(p)  # gradients left by something else
    fused.step(DATA)
    assert all(p.grad is None for p in params)  # dropped, as optimizer.zero_grad(set_to_none=True) does


class Blowup(MonadicProgram):
    """``y ~ N(z, s)`` with ``s = exp(1e3 z)``: a draw of ``z`` far enough from 0 makes the
    loss or its gradient non-finite."""

    def __init__(self):
        super().__init__()
        self.declare(Latent("z", lambda: dist.Normal(0.0, 1.0)),
                     Observed("y", lambda z: dist.Normal(z, torch.exp(1e3 * z)), plate=Plate("data", size=3)))


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_a_nonfinite_fused_step_changes_nothing(policy):
    torch.manual_seed(0)
    model = Blowup()
    guide = AutoNormalGuide(model)
    optim = torch.optim.Adam(guide.parameters(), lr=0.01)
    svi = SVI(model, guide, optim, compile=True, on_nonfinite=policy)
    y = {"y": torch.zeros(3)}
    with torch.no_grad():
        guide.scales_raw["z"].fill_(-20.0)  # sd 2e-9: every draw is finite
    svi.step(y)  # eager first step
    svi.step(y)  # compiled
    assert svi._can_fuse()
    with torch.no_grad():
        guide.scales_raw["z"].fill_(3.0)  # sd 3: draws overflow exp(1e3 z)
    before = {k: v.clone() for k, v in guide.state_dict().items()}
    state = {k: v.clone() for k, v in optim.state[guide.locs.flat].items()}
    if policy == "raise":
        with pytest.raises(NonFiniteLossError, match="step 3: .*was not applied"):
            svi.step(y)
    else:
        for _ in range(3):
            svi.step(y)
        assert svi.num_skipped_steps == 3
    assert svi._fused.failed is None
    assert all(torch.equal(before[k], v) for k, v in guide.state_dict().items())
    assert all(torch.equal(state[k], v) for k, v in optim.state[guide.locs.flat].items())


def test_unfusable_optimizers_keep_their_own_step():
    torch.manual_seed(0)
    model = EightSchools()
    guide = AutoNormalGuide(model)
    named = {id(p): n for n, p in guide.named_parameters()}
    params = list(guide.parameters())
    assert "SGD is not Adam" in fusion_blocker(torch.optim.SGD(params, lr=0.1), named)
    assert "amsgrad" in fusion_blocker(torch.optim.Adam(params, amsgrad=True), named)
    assert "not a parameter" in fusion_blocker(torch.optim.Adam([torch.zeros(2, requires_grad=True)]), named)
    hooked = torch.optim.Adam(params)
    hooked.register_step_post_hook(lambda *a: None)
    assert "hooks" in fusion_blocker(hooked, named)
    assert fusion_blocker(torch.optim.Adam(params), named) is None
    svi = SVI(model, guide, torch.optim.SGD(params, lr=1e-3), compile=True)
    before = [p.detach().clone() for p in params]
    svi.step(DATA)
    svi.step(DATA)  # the loss compiled, SGD's own step
    assert not svi._can_fuse() and not svi._objective.is_eager
    assert all(not torch.equal(a, b) for a, b in zip(before, params, strict=True))


def test_iterate_average_is_the_mean_of_the_values_it_saw():
    """Against the plain mean of the recorded values and against
    ``torch.optim.swa_utils.AveragedModel`` (the library whose arithmetic it reproduces)."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2, dtype=torch.float64)), torch.nn.Parameter(torch.randn(4))]
    average = IterateAverage(params)
    library = torch.optim.swa_utils.AveragedModel(torch.nn.ParameterList(params), use_buffers=False)
    library.update_parameters(torch.nn.ParameterList(params))
    seen = [[p.detach().clone() for p in params]]
    for _ in range(7):
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn_like(p))
        seen.append([p.detach().clone() for p in params])
        average.update()
        library.update_parameters(torch.nn.ParameterList(params))
    assert average.count == 8
    for i, (a, lib) in enumerate(zip(average.averages, library.module, strict=True)):
        want = torch.stack([s[i] for s in seen]).mean(0)
        torch.testing.assert_close(a, want)
        torch.testing.assert_close(a, lib.detach())
        assert a.dtype == params[i].dtype
    average.copy_to_params()
    for p, a in zip(params, average.averages, strict=True):
        assert torch.equal(p.detach(), a)


def test_fused_steps_follow_a_reloaded_optimizer_state():
    """``load_state_dict`` replaces Adam's state tensors: the next fused step updates the
    reloaded ones (not the tensors it saw before), as an eager step would."""
    import copy

    torch.manual_seed(0)
    model = Blowup()
    guide = AutoNormalGuide(model)
    optim = torch.optim.Adam(guide.parameters(), lr=0.01)
    svi = SVI(model, guide, optim, compile=True)
    y = {"y": torch.zeros(3)}
    with torch.no_grad():
        guide.scales_raw["z"].fill_(-20.0)
    for _ in range(3):
        svi.step(y)
    saved = copy.deepcopy(optim.state_dict())
    for _ in range(2):
        svi.step(y)
    optim.load_state_dict(saved)
    reloaded = optim.state[guide.locs.flat]["exp_avg"].clone()
    svi.step(y)
    assert svi._can_fuse()
    state = optim.state[guide.locs.flat]
    assert float(state["step"]) == 4.0
    assert not torch.equal(state["exp_avg"], reloaded)

