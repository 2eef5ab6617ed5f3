"""``ProjectedNormal`` (directions on the sphere) and ``ProjectedNormalReparam``: the density
against quadrature, and guiding a sphere-valued site (Pyro's ``test_sphere_reparam_ok``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributions as dist

from quivers import Latent, MonadicProgram, Observed
from quivers.errors import GuideError
from quivers.guides import AutoNormalGuide
from quivers.infer import SVI, Trace_ELBO
from quivers.program import ProjectedNormal, ProjectedNormalReparam
from quivers.program.projected import _log_radial_integral

pytestmark = pytest.mark.usefixtures("float64")


@pytest.mark.parametrize("n", [1, 2, 4, 9])
@pytest.mark.parametrize("t", [-15.0, -8.0, -2.0, 0.0, 1.5, 6.0, 20.0])
def test_radial_integral_matches_quadrature(n, t):
    """log J_n(t) = log int_0^inf r^n exp(-r^2/2 + r t) dr by the trapezoid rule on a
    fine grid (scaled by the integrand's maximum so nothing under- or overflows)."""
    r = torch.linspace(0.0, max(t, 0.0) + 40.0, 400001)
    log_f = n * r.clamp_min(1e-300).log() - 0.5 * r * r + r * t
    peak = log_f.max()
    quad = torch.trapezoid((log_f - peak).exp(), r).log() + peak
    # float64 quadrature with 1e-4 spacing: ~1e-8 relative; the recurrence is exact to
    # ~1e-10 here; 1e-6 is well above both and far below float32 resolution
    torch.testing.assert_close(_log_radial_integral(n, torch.tensor(t)), quad, rtol=1e-6, atol=1e-6)


def _sphere_area(k: int) -> float:
    """Surface area of the unit sphere S^k in R^(k+1)."""
    return 2 * math.pi ** ((k + 1) / 2) / math.gamma((k + 1) / 2)


@pytest.mark.parametrize("mu", [[1.5, -0.7], [0.3, 2.0, -1.0], [0.5, 0.0, -1.0, 2.0, 0.2], [0.0, 0.0, 0.0]])
def test_density_integrates_to_one_on_the_sphere(mu):
    """With x = cos(a) e + sin(a) f (e along mu), the density depends on a alone and the
    sphere's surface element is A(S^(D-2)) sin(a)^(D-2) da, a in [0, pi]."""
    mu = torch.tensor(mu)
    d, m = len(mu), float(mu.norm())
    e = mu / m if m > 0 else torch.eye(d)[0]
    f = torch.eye(d)[1] - torch.eye(d)[1] @ e * e
    f = f / f.norm()
    a = torch.linspace(0, math.pi, 200001)
    x = a.cos()[:, None] * e + a.sin()[:, None] * f
    p = ProjectedNormal(mu).log_prob(x).exp()
    total = torch.trapezoid(p * _sphere_area(d - 2) * a.sin() ** (d - 2), a)
    assert float(total) == pytest.approx(1.0, abs=1e-6)  # smooth integrand: the trapezoid rule is ~1e-10 here


def test_draws_lie_on_the_sphere_around_the_mode():
    torch.manual_seed(0)
    d = ProjectedNormal(torch.tensor([0.0, 8.0, 0.0]))
    x = d.rsample((5000,))
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(5000))
    assert bool(d.support.check(x).all())
    assert float((x @ d.mode).mean()) > 0.9
    assert d.expand((4,)).sample().shape == (4, 3)


class Direction(MonadicProgram):
    """x uniform on S^2 (concentration 0); y ~ N(x, 0.3 I): the posterior leans to y's direction."""

    def __init__(self):
        super().__init__()
        self.declare(Latent("x", lambda: ProjectedNormal(torch.zeros(3))),
                     Observed("y", lambda x: dist.Independent(dist.Normal(x, 0.3), 1)))


def test_a_sphere_site_needs_the_reparam_and_trains_with_it():
    with pytest.raises(GuideError, match="ProjectedNormalReparam"):
        AutoNormalGuide(Direction())
    model = Direction().reparam({"x": ProjectedNormalReparam()})
    assert model.latent_names == ["x_normal"]
    z = torch.tensor([0.3, -1.2, 0.8])
    y = {"y": torch.tensor([0.0, 0.0, 1.0])}
    tr = model.trace(y, {"x_normal": z})
    torch.testing.assert_close(tr["x"].value, z / z.norm())
    hand = dist.Normal(0.0, 1.0).log_prob(z).sum() + dist.Normal(z / z.norm(), 0.3).log_prob(y["y"]).sum()
    torch.testing.assert_close(tr.log_joint(), hand)
    torch.manual_seed(0)
    guide = AutoNormalGuide(model)
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.05), Trace_ELBO(num_particles=4))
    losses = [svi.step(y) for _ in range(300)]
    assert all(math.isfinite(v) for v in losses)
    x = guide.sample_posterior(y, (2000,))["x"]
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(2000))
    # the posterior mean direction leans towards y = e3 (its cosine with e3 is ~0.9)
    assert float(x.mean(0)[2]) > 0.7
