"""Factor sites: one term per plate element, scaled under subsampling like any site."""

import pytest
import torch
from torch import distributions as dist

from quivers import Factor, Latent, MonadicProgram, Plate
from quivers.errors import ModelSpecError, ShapeError


class Factors(MonadicProgram):
    def __init__(self, size=3, subsample_size=None):
        super().__init__()
        plate = Plate("plate", size=size, subsample_size=subsample_size)
        self.declare(
            Latent("z", lambda: dist.Normal(0.0, 1.0)),
            Factor("f1", lambda c: c),
            Factor("f2", lambda c: c, plate=plate),
        )


def test_a_factor_in_a_plate_counts_once_per_element():
    """Pyro's test_factor: a factor c outside any plate and one in a plate of size 3 add
    c + 3c to the log joint (the Factor docstring's contract)."""
    model = Factors()
    z = {"z": torch.tensor([0.3])}
    lj5 = model.log_joint({"c": torch.tensor(5.0)}, z)
    lj4 = model.log_joint({"c": torch.tensor(4.0)}, z)
    assert float(lj5 - lj4) == pytest.approx(1 + 3)
    tr = model.trace({"c": torch.tensor(2.0)}, z)
    assert float(tr["f1"].log_prob) == 2.0 and float(tr["f2"].log_prob) == 6.0


def test_factor_terms_per_row_are_summed_and_scaled_by_the_subsample():
    """A factor of per-row terms in a subsampled plate: the rows drawn, times size / rows;
    averaged over subsamples, the full sum (unbiased)."""
    model = Factors(size=10, subsample_size=4)
    x = torch.arange(10.0)

    class PerRow(MonadicProgram):
        def __init__(self):
            super().__init__()
            plate = Plate("plate", size=10, subsample_size=4)
            self.declare(Latent("z", lambda: dist.Normal(0.0, 1.0)), Factor("f", lambda x: x, plate=plate))

    model = PerRow()
    total = 0.0
    for _ in range(2000):
        batch = model.prepare({"x": x})
        tr = model.trace(batch, {"z": torch.tensor([0.0])})
        idx = batch["plate"]
        assert float(tr["f"].log_prob) == pytest.approx(float(x[idx].sum()) * 10 / 4)
        assert tr["f"].scale == 2.5
        total += float(tr["f"].log_prob)
    # the subsample mean of x has sd ~1.3 (without replacement), so the estimate of the full
    # sum 45 has sd 10 * 1.3 / sqrt(2000) ~ 0.3: 1.5 is five standard errors
    assert total / 2000 == pytest.approx(45.0, abs=1.5)


def test_a_constant_factor_in_a_subsampled_plate_is_scaled():
    model = Factors(size=10, subsample_size=4)
    tr = model.trace(model.prepare({"c": torch.tensor(1.0)}), {"z": torch.tensor([0.0])})
    assert float(tr["f2"].log_prob) == pytest.approx(10.0)  # 4 elements x 10 / 4


def test_factor_with_particles_has_sample_shape():
    model = Factors()
    tr = model.trace({"c": torch.tensor(1.0)}, {"z": torch.zeros(5, 1)})
    assert tr["f2"].log_prob.shape == (5,) and torch.all(tr["f2"].log_prob == 3.0)


def test_factor_returning_a_distribution_is_an_error():
    class Bad(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Latent("z", lambda: dist.Normal(0.0, 1.0)), Factor("f", lambda z: dist.Normal(z, 1.0)))

    with pytest.raises(ModelSpecError, match="factor 'f'.*returned a Normal"):
        Bad().trace(None, {"z": torch.zeros(1)})


def test_factor_of_the_wrong_shape_is_a_shape_error():
    class Bad(MonadicProgram):
        def __init__(self):
            super().__init__()
            plate = Plate("plate", size=3)
            self.declare(Latent("z", lambda: dist.Normal(0.0, 1.0)), Factor("f", lambda: torch.ones(4), plate=plate))

    with pytest.raises(ShapeError, match="factor 'f'.*shape \\(4,\\)"):
        Bad().trace(None, {"z": torch.zeros(1)})
