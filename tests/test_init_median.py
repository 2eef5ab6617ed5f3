"""``init_to_median``: the prior's elementwise median, exact where an inverse CDF exists,
sampled in slices otherwise, and a guide for a large site built in bounded memory."""

import subprocess
import sys
import textwrap

import pytest
import torch
from scipy import stats
from torch import distributions as dist

from quivers.guides import initialization
from quivers.guides.initialization import prior_median


@pytest.mark.parametrize("d, expected", [
    (dist.Normal(torch.tensor([-1.0, 2.0]), 3.0), [-1.0, 2.0]),
    (dist.LogNormal(torch.tensor([0.5, -1.0]), 2.0), [0.5, -1.0]),  # exp of the base median, below
    (dist.HalfNormal(torch.tensor([1.0, 4.0])), stats.halfnorm.median(scale=[1.0, 4.0])),
    (dist.Uniform(torch.tensor([0.0, 2.0]), 4.0), [2.0, 3.0]),
    (dist.Independent(dist.Normal(torch.tensor([[1.0, 2.0]]), 1.0), 1), [[1.0, 2.0]]),
], ids=["normal", "lognormal", "halfnormal", "uniform", "independent"])
def test_exact_medians(d, expected):
    expected = torch.as_tensor(expected, dtype=torch.float32)
    if isinstance(d, dist.LogNormal):
        expected = expected.exp()
    torch.testing.assert_close(prior_median(d), expected.expand(d.batch_shape + d.event_shape),
                               rtol=1e-5, atol=1e-6)


def test_a_decreasing_transform_maps_the_median():
    # InverseGamma = 1 / Gamma: its median is 1 / (the Gamma median), estimated here from
    # 15 draws per element; averaged over 20000 elements the estimate's error is ~0.002
    d = dist.InverseGamma(torch.full((20000,), 3.0), 2.0)
    m = prior_median(d)
    assert abs(float(m.median()) - stats.invgamma.median(3.0, scale=2.0)) < 0.02


@pytest.mark.parametrize("rebuild", [True, False], ids=["sliced-parameters", "sliced-draws"])
def test_large_sites_are_sampled_in_slices_with_the_right_median(monkeypatch, rebuild):
    monkeypatch.setattr(initialization, "_DRAW_BUDGET", 15 * 1000)  # force slicing: 1000 elements x 15 draws
    if not rebuild:
        monkeypatch.setattr(initialization, "_batch_slice", lambda *a: None)
    d = dist.Gamma(torch.full((6000,), 2.0), 1.0)
    m = prior_median(d)
    assert m.shape == (6000,)
    # against the median of 15 draws taken at once (the median of 15 draws is biased
    # upwards for a right-skewed prior, so compare like with like): each elementwise median
    # has sd ~0.45, so the two means over 6000 elements differ by sd ~0.008; 0.04 is five
    direct = d.sample((15,)).median(0).values
    assert abs(float(m.mean()) - float(direct.mean())) < 0.04
    # slices use fresh draws: consecutive slices are not copies of each other
    assert not torch.equal(m[:1000], m[1000:2000])


def test_an_event_shaped_site_is_sliced_along_its_batch(monkeypatch):
    monkeypatch.setattr(initialization, "_DRAW_BUDGET", 15 * 300)
    d = dist.Dirichlet(torch.tensor([1.0, 2.0, 7.0]).expand(3000, 3))
    m = prior_median(d)
    assert m.shape == (3000, 3)
    # against 15 draws taken at once: each coordinate's mean over 3000 rows has sd < 0.005
    # for either; 0.03 is over four sd of their difference
    direct = d.sample((15,)).median(0).values
    assert (m.mean(0) - direct.mean(0)).abs().max() < 0.03


def test_a_guide_for_a_large_site_is_built_in_bounded_memory():
    """A Gamma site of 2e6 elements (8 MB): AutoNormalGuide's two parameters take 16 MB.
    Before, init_to_median held 15 full draws plus sorting buffers, a peak of ~17x the
    parameters (measured); now about 4x."""
    code = textwrap.dedent("""
        import resource, torch
        from torch import distributions as dist
        from quivers import Latent, MonadicProgram, Plate
        from quivers.guides import AutoNormalGuide

        class Big(MonadicProgram):
            def __init__(self):
                super().__init__()
                self.register_buffer("a", torch.full((2_000_000,), 2.0))
                self.declare(Latent("z", lambda: dist.Gamma(self.a, 1.0), plate=Plate("p", size=2_000_000)))

        model = Big()
        torch.zeros(2_000_000).add_(1)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        guide = AutoNormalGuide(model)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        params = sum(p.numel() * p.element_size() for p in guide.parameters())
        print(grown / params)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ratio = float(r.stdout.strip().splitlines()[-1])
    assert ratio < 6, ratio
