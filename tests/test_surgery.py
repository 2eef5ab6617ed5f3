"""Program surgery: ``condition``, ``do``, ``mask`` and ``scale``, each against the log
joint written by hand with ``torch.distributions``."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.distributions as dist

from quivers import Latent, MonadicProgram, Observed, Param, Plate
from quivers.errors import BatchError, ModelSpecError
from quivers.guides import AutoNormalGuide
from quivers.infer import SVI, Trace_ELBO
from quivers.infer.enumerated import model_log_density
from quivers.models import EightSchools
from quivers.validation import validation_enabled

Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
BATCH = {"y": Y, "sigma": SIGMA}
MU, TAU, ETA = torch.tensor(1.3), torch.tensor(2.1), torch.linspace(-1.0, 1.0, 8)


def _log_joint(model, batch, values):
    return model.log_joint(batch, values)


def _hand(mu=MU, tau=TAU, eta=ETA, with_tau=True, y_weight=None):
    """Non-centred eight schools' log joint by hand; ``y_weight`` multiplies each school's
    likelihood term (a mask as 0/1, or a scale)."""
    lp = dist.Normal(0.0, 5.0).log_prob(mu) + dist.Normal(0.0, 1.0).log_prob(eta).sum()
    if with_tau:
        lp = lp + dist.HalfCauchy(5.0).log_prob(tau)
    lik = dist.Normal(mu + tau * eta, SIGMA).log_prob(Y)
    return lp + (lik if y_weight is None else lik * y_weight).sum()


def test_condition_makes_a_latent_site_observed_at_the_value():
    model = EightSchools()
    cond = model.condition({"tau": TAU})
    assert cond.latent_names == ["mu", "eta"] and "tau" in cond.observed_names
    assert model.latent_names == ["mu", "tau", "eta"]  # the original is unchanged
    torch.testing.assert_close(_log_joint(cond, BATCH, {"mu": MU, "eta": ETA}), _hand())
    guide = AutoNormalGuide(cond)
    assert guide.latent_names == ["mu", "eta"]
    z = guide.rsample(BATCH, (3,))
    assert torch.isfinite(Trace_ELBO(num_particles=3)(cond, guide, BATCH))
    assert set(z) == {"mu", "eta"}
    with pytest.raises(BatchError, match="conditions site 'tau' on a fixed value"):
        cond.prepare({**BATCH, "tau": TAU})


def test_do_fixes_the_value_and_drops_the_density():
    model = EightSchools()
    inter = model.do({"tau": TAU})
    assert inter.latent_names == ["mu", "eta"]
    assert "tau" not in inter.observed_names
    torch.testing.assert_close(_log_joint(inter, BATCH, {"mu": MU, "eta": ETA}), _hand(with_tau=False))
    tr = inter.trace(BATCH, {"mu": MU, "eta": ETA})
    assert tr["tau"].kind == "deterministic" and torch.equal(tr["theta"].value.reshape(-1), MU + TAU * ETA)


def test_do_differs_from_condition_upstream():
    """x ~ N(0, 1), y ~ N(x, 1): conditioning on y = 2 moves x's posterior to N(1, 1/2);
    intervening on y leaves x at its prior N(0, 1)."""
    class Chain(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Latent("x", lambda: dist.Normal(0.0, 1.0)), Latent("y", lambda x: dist.Normal(x, 1.0)))

    model = Chain()
    xs = torch.linspace(-3, 3, 13)
    cond = torch.stack([model.condition({"y": 2.0}).log_joint({}, {"x": x}) for x in xs])
    inter = torch.stack([model.do({"y": 2.0}).log_joint({}, {"x": x}) for x in xs])
    prior = dist.Normal(0.0, 1.0).log_prob(xs)
    torch.testing.assert_close(cond, prior + dist.Normal(xs, 1.0).log_prob(torch.tensor(2.0)))
    torch.testing.assert_close(inter, dist.Normal(0.0, 1.0).log_prob(xs))


def test_mask_drops_the_masked_entries_also_when_infinite():
    model = EightSchools()
    m = torch.tensor([True, False, True, True, False, True, True, False])
    masked = model.mask("y", m)
    torch.testing.assert_close(_log_joint(masked, BATCH, {"mu": MU, "tau": TAU, "eta": ETA}),
                               _hand(y_weight=m.float()))
    # a masked entry's density is dropped even where it is -inf (with validation off, as in
    # Pyro: validation rejects data outside the support, masked or not)
    class Hard(MonadicProgram):
        def __init__(self):
            super().__init__()
            rows = Plate("rows", size=3)
            self.declare(Latent("z", lambda: dist.Normal(0.0, 1.0)),
                         Observed("x", lambda z: dist.Uniform(z - 1.0, z + 1.0), plate=rows))

    with torch.no_grad(), validation_enabled(False):
        hard = Hard().mask("x", torch.tensor([True, True, False]))
        x = torch.tensor([0.1, -0.2, 50.0])
        lp = hard.log_joint({"x": x}, {"z": torch.tensor(0.0)})
    assert torch.isfinite(lp)
    torch.testing.assert_close(lp, dist.Normal(0.0, 1.0).log_prob(torch.tensor(0.0)) + 2 * torch.tensor(0.5).log())


def test_scale_multiplies_the_density_by_a_number_or_per_plate_element():
    model = EightSchools()
    values = {"mu": MU, "tau": TAU, "eta": ETA}
    torch.testing.assert_close(_log_joint(model.scale("y", 0.25), BATCH, values), _hand(y_weight=0.25))
    w = torch.linspace(0.0, 2.0, 8)
    torch.testing.assert_close(_log_joint(model.scale("y", w), BATCH, values), _hand(y_weight=w))
    # applied twice, the scales multiply; mask and scale combine
    both = model.scale("y", w).scale("y", 2.0).mask("y", w > 0.5)
    torch.testing.assert_close(_log_joint(both, BATCH, values), _hand(y_weight=2 * w * (w > 0.5)))
    # a latent site's prior can be tempered too
    hand = _hand() + (0.5 - 1.0) * dist.HalfCauchy(5.0).log_prob(TAU)
    torch.testing.assert_close(_log_joint(model.scale("tau", 0.5), BATCH, values), hand)


def test_mask_and_scale_follow_subsample_indices():
    """Rows of a subsampled plate: the mask and the per-row scale are sliced by the
    batch's indices, and the subsample scale (size / rows) still applies."""
    class Local(MonadicProgram):
        def __init__(self):
            super().__init__()
            data = Plate("data", size=6, subsample_size=3)
            self.declare(Latent("m", lambda: dist.Normal(0.0, 1.0)),
                         Observed("x", lambda m: dist.Normal(m, 1.0), plate=data))

    x = torch.arange(6.0)
    mask = torch.tensor([True, False, True, True, False, True])
    w = torch.arange(1.0, 7.0)
    model = Local().mask("x", mask).scale("x", w)
    idx = torch.tensor([1, 2, 5])
    lp = model.log_joint({"x": x[idx], "data": idx}, {"m": torch.tensor(0.5)})
    lik = dist.Normal(0.5, 1.0).log_prob(x[idx]) * mask[idx] * w[idx]
    torch.testing.assert_close(lp, dist.Normal(0.0, 1.0).log_prob(torch.tensor(0.5)) + lik.sum() * 6 / 3)


def test_mask_applies_under_enumeration(float64):
    """An enumerated mixture with some points masked: the log marginal equals the brute
    force over the assignments of the unmasked points only."""
    class Mix(MonadicProgram):
        def __init__(self):
            super().__init__()
            data = Plate("data", size=4)
            self.declare(Latent("c", lambda: dist.Categorical(torch.tensor([0.3, 0.7])), plate=data,
                                enumerate="parallel"),
                         Observed("x", lambda c: dist.Normal(torch.tensor([-1.0, 2.0])[c], 1.0), plate=data))

    x = torch.tensor([0.3, -1.2, 2.5, 1.0])
    keep = torch.tensor([True, False, True, False])
    got = model_log_density(Mix().mask("x", keep), Mix().prepare({"x": x}), {}, torch.Size())[0]
    brute = []
    for cs in itertools.product([0, 1], repeat=4):
        c = torch.tensor(cs)
        lp = dist.Categorical(torch.tensor([0.3, 0.7])).log_prob(c).sum()
        lp = lp + (dist.Normal(torch.tensor([-1.0, 2.0])[c], 1.0).log_prob(x) * keep).sum()
        brute.append(lp)
    torch.testing.assert_close(got, torch.logsumexp(torch.stack(brute), 0))


def test_derived_programs_share_parameters_with_the_original():
    class WithParam(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Param("s", torch.tensor(1.0), dist.constraints.positive),
                         Latent("z", lambda s: dist.Normal(0.0, s)),
                         Observed("y", lambda z: dist.Normal(z, 1.0)))

    model = WithParam()
    derived = model.scale("y", 0.5).mask("z", torch.tensor(True))
    assert {id(p) for p in derived.parameters()} == {id(p) for p in model.parameters()}
    guide = AutoNormalGuide(derived)
    svi = SVI(derived, guide, torch.optim.Adam([*guide.parameters(), *derived.parameters()], lr=0.1))
    before = model.param_value("s").item()
    for _ in range(3):
        svi.step({"y": torch.tensor(3.0)})
    assert model.param_value("s").item() != before
    assert derived.param_value("s").item() == model.param_value("s").item()


@pytest.mark.parametrize("call, match", [
    (lambda m: m.condition({"nope": 1.0}), r"condition: 'nope' is not a site of EightSchools"),
    (lambda m: m.condition({"y": Y}), r"condition: site 'y' is Observed; condition takes latent sites"),
    (lambda m: m.condition({"tau": "a"}), r"condition: the value of site 'tau' is not a tensor"),
    (lambda m: m.do({"theta": 1.0}), r"do: site 'theta' is Deterministic; do takes latent or observed sites"),
    (lambda m: m.mask("y", torch.ones(8)), r"mask: site 'y': the mask must be a bool tensor"),
    (lambda m: m.mask("y", torch.ones(5, dtype=torch.bool)),
     r"mask: site 'y': the tensor has shape \(5,\), 5 entries along dim -1, which belongs to plate 'schools'"),
    (lambda m: m.mask("mu", torch.ones(8, dtype=torch.bool)),
     r"mask: site 'mu': the tensor has shape \(8,\), more dims than the site's 0 batch dim"),
    (lambda m: m.scale("y", -1.0), r"scale: site 'y': the factor must be finite and >= 0, got -1.0"),
    (lambda m: m.scale("y", float("nan")), r"scale: site 'y': the factor must be finite and >= 0"),
    (lambda m: m.scale("theta", 2.0), r"scale: site 'theta' is Deterministic"),
])
def test_bad_surgery_raises_naming_the_site(call, match):
    with pytest.raises(ModelSpecError, match=match):
        call(EightSchools())


def test_a_conditioned_program_exports_its_fixed_values_as_observed_data():
    from quivers.infer import to_inference_data

    cond = EightSchools().condition({"tau": TAU})
    guide = AutoNormalGuide(cond)
    idata = to_inference_data(cond, guide, BATCH, num_samples=50)
    assert idata.observed_data["tau"].values.reshape(-1).tolist() == pytest.approx([float(TAU)])
    assert "tau" not in idata.posterior and idata.posterior["mu"].shape == (1, 50)
