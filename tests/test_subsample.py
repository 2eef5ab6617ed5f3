"""Subsampling: the scaled minibatch ELBO gradient is an unbiased estimate of the
full-batch gradient."""

import pytest
import torch
from torch import distributions as dist

from quivers import Latent, MonadicProgram, Observed, Plate
from quivers.guides import AutoDeltaGuide
from quivers.infer import Trace_ELBO


class Hier(MonadicProgram):
    """Global mu, local z_i in a subsampled plate, observed y_i."""

    def __init__(self, n, subsample_size=None):
        super().__init__()
        data = Plate("data", size=n, subsample_size=subsample_size)
        self.declare(
            Latent("mu", lambda: dist.Normal(0.0, 3.0)),
            Latent("z", lambda mu: dist.Normal(mu, 1.0), plate=data),
            Observed("y", lambda z, x: dist.Normal(z + x, 0.5), plate=data),
        )


def _grad(model, guide, batch):
    guide.zero_grad()
    Trace_ELBO()(model, guide, batch).backward()
    return torch.cat([p.grad.reshape(-1).clone() for p in guide.parameters()])


def test_subsampled_gradient_is_unbiased():
    n, k, reps = 40, 8, 3000
    torch.manual_seed(1)
    y, x = torch.randn(n) * 2, torch.randn(n)
    full_model = Hier(n)
    guide = AutoDeltaGuide(full_model)  # a Delta guide removes guide noise: only subsampling noise remains
    g_full = _grad(full_model, guide, {"y": y, "x": x})

    sub_model = Hier(n, subsample_size=k)
    sub_guide = AutoDeltaGuide(sub_model)
    sub_guide.load_state_dict(guide.state_dict())  # the same point, evaluated on minibatches
    grads = torch.stack([_grad(sub_model, sub_guide, {"y": y, "x": x}) for _ in range(reps)])
    mean, se = grads.mean(0), grads.std(0) / reps**0.5
    # unbiased: every coordinate within 4 standard errors (a false alarm has probability
    # ~1e-4 per coordinate), and the minibatch gradients really vary (se > 0)
    assert (se[1:] > 0).all()
    assert ((mean - g_full).abs() <= 4 * se + 1e-5).all()


def test_subsample_indices_slice_fields_and_scale():
    model = Hier(20, subsample_size=5)
    batch = model.prepare({"y": torch.arange(20.0), "x": torch.arange(20.0) * 10})
    idx = batch["data"]
    assert idx.shape == (5,) and len(set(idx.tolist())) == 5
    assert torch.equal(batch["y"], idx.float()) and torch.equal(batch["x"], idx.float() * 10)
    guide = AutoDeltaGuide(model)
    tr = model.trace(batch, guide.rsample(batch, (1,)))
    assert tr["y"].scale == 4.0 and tr["z"].scale == 4.0 and tr["mu"].scale == 1.0


def test_minibatch_with_given_indices_is_not_resampled():
    model = Hier(20, subsample_size=5)
    idx = torch.tensor([3, 7])
    batch = model.prepare({"y": torch.zeros(2), "x": torch.zeros(2), "data": idx})
    assert torch.equal(batch["data"], idx)
    z = AutoDeltaGuide(model).rsample(batch, (1,))["z"]
    assert z.shape == (1, 2)


def test_subsample_indices_distinct_and_uniform():
    from quivers.program import subsample_indices

    counts = torch.zeros(100)
    for _ in range(4000):
        idx = subsample_indices(100, 10)
        assert idx.numel() == 10 and idx.unique().numel() == 10 and 0 <= idx.min() and idx.max() < 100
        counts[idx] += 1
    # each index is expected 400 times; binomial sd ~19, so 5 sd either side
    assert (counts - 400).abs().max() < 5 * 19
    assert subsample_indices(8, 6).unique().numel() == 6  # randperm branch


class TwoPlates(MonadicProgram):
    """Rows at dim -2 and columns at dim -1, both subsampled: ``y`` (N, M) in both plates, an
    input ``c`` (M,) that varies along the columns only, an input ``r`` (N, 1) along the rows."""

    def __init__(self, n=12, m=9):
        super().__init__()
        rows = Plate("rows", size=n, subsample_size=4, dim=-2)
        cols = Plate("cols", size=m, subsample_size=3, dim=-1)
        self.declare(
            Latent("mu", lambda: dist.Normal(0.0, 1.0)),
            Observed("y", lambda mu, r, c: dist.Normal(mu + r + c, 1.0), plate=(rows, cols)),
        )


def test_two_subsampled_plates_slice_each_field_along_its_plates_dims():
    model = TwoPlates()
    y = torch.arange(12 * 9, dtype=torch.float32).reshape(12, 9)
    r = torch.arange(12.0).unsqueeze(-1) * 100
    c = torch.arange(9.0) * 1000
    for _ in range(20):
        batch = model.prepare({"y": y, "r": r, "c": c})
        i, j = batch["rows"], batch["cols"]
        assert torch.equal(batch["y"], y[i][:, j])
        assert torch.equal(batch["r"], r[i]) and torch.equal(batch["c"], c[j])
        tr = model.trace(batch, {"mu": torch.zeros(1, 1)})
        assert tr["y"].scale == pytest.approx(12 / 4 * 9 / 3)
        want = dist.Normal(batch["r"] + batch["c"], 1.0).log_prob(y[i][:, j]).sum() * 9.0
        assert torch.allclose(tr["y"].log_prob, want)


def test_a_field_whose_plate_dim_has_the_wrong_length_is_a_batch_error():
    from quivers.errors import BatchError

    model = TwoPlates()
    with pytest.raises(BatchError, match="batch field 'c'.*plate 'cols' \\(size 9\\)"):
        model.prepare({"y": torch.zeros(12, 9), "r": torch.zeros(12, 1), "c": torch.zeros(5)})


def test_fields_of_a_plate_must_agree_on_its_rows():
    """Without subsampling, the fields of a plate hold the same rows along its dim: a leading
    dim of 1 is a mistake (it used to broadcast silently), an inner plate's dim of 1 broadcasts."""
    from quivers.errors import BatchError

    class Unsampled(MonadicProgram):
        def __init__(self):
            super().__init__()
            rows, cols = Plate("rows", dim=-2), Plate("cols", dim=-1)
            self.declare(Latent("mu", lambda: dist.Normal(0.0, 1.0)),
                         Observed("y", lambda mu, r, c: dist.Normal(mu + r + c, 1.0), plate=(rows, cols)))

    model = Unsampled()
    y, c = torch.zeros(6, 4), torch.zeros(4)
    model.prepare({"y": y, "r": torch.zeros(6, 1), "c": c})  # r varies along the rows only
    with pytest.raises(BatchError, match="plate 'rows' disagree on its rows: 'y' has 6 along dim 0, 'r' has 1"):
        model.prepare({"y": y, "r": torch.zeros(1, 1), "c": c})
    with pytest.raises(BatchError, match="plate 'cols' disagree on its rows: 'y' has 4 along dim 1, 'c' has 3"):
        model.prepare({"y": y, "r": torch.zeros(6, 1), "c": torch.zeros(3)})
