"""Bad input gets a clear ValueError subclass naming the site, before anything changes."""

import pytest
import torch
from torch import distributions as dist

from quivers import Latent, MonadicProgram, Observed, Plate
from quivers.errors import BatchError, GuideError, ModelSpecError, QuiversError, ShapeError, SupportError
from quivers.guides import AutoNormalGuide
from quivers.infer import SVI, Trace_ELBO


class Model(MonadicProgram):
    def __init__(self):
        super().__init__()
        data = Plate("data", size=5)
        self.declare(
            Latent("rate", lambda: dist.Gamma(2.0, 1.0)),
            Observed("counts", lambda rate, exposure: dist.Poisson(rate * exposure), plate=data),
        )


GOOD = {"counts": torch.tensor([1.0, 0.0, 3.0, 2.0, 1.0]), "exposure": torch.ones(5)}

BAD_BATCHES = {
    "unknown key": ({**GOOD, "cnts": torch.ones(5)}, BatchError, "'cnts'"),
    "missing observed": ({"exposure": torch.ones(5)}, BatchError, "'counts'"),
    "missing input": ({"counts": GOOD["counts"]}, BatchError, "'counts' depends on 'exposure'"),
    "NaN": ({**GOOD, "counts": torch.tensor([1.0, float("nan"), 3.0, 2.0, 1.0])}, BatchError, "'counts'.*non-finite"),
    "inf": ({**GOOD, "exposure": torch.tensor([1.0, float("inf"), 1.0, 1.0, 1.0])}, BatchError, "'exposure'"),
    "outside support": (
        {**GOOD, "counts": torch.tensor([1.0, -1.0, 3.0, 2.0, 1.0])}, SupportError, "'counts'.*support"
    ),
    "non-integer count": ({**GOOD, "counts": torch.tensor([1.5, 0.0, 3.0, 2.0, 1.0])}, SupportError, "'counts'"),
    "wrong shape": ({**GOOD, "counts": torch.ones(5, 2)}, ShapeError, "'counts'.*shape"),
    "too many rows": ({"counts": torch.ones(7), "exposure": torch.ones(7)}, ShapeError, "'counts'"),
    "empty": ({**GOOD, "counts": torch.ones(0)}, BatchError, "'counts'.*empty"),
    "not a mapping": ([1, 2, 3], BatchError, "mapping"),
}


@pytest.mark.parametrize("case", list(BAD_BATCHES), ids=list(BAD_BATCHES))
def test_bad_batch_raises_before_any_parameter_changes(case):
    batch, err, pattern = BAD_BATCHES[case]
    model = Model()
    guide = AutoNormalGuide(model)
    before = {k: v.clone() for k, v in guide.state_dict().items()}
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.1), Trace_ELBO())
    with pytest.raises(err, match=pattern) as info:
        svi.step(batch)
    assert isinstance(info.value, ValueError) and isinstance(info.value, QuiversError)
    after = guide.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    svi.step(GOOD)  # and the same objects still work afterwards


def test_duplicate_site_name():
    class M(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Latent("a", lambda: dist.Normal(0, 1)), Latent("a", lambda: dist.Normal(0, 1)))

    with pytest.raises(ModelSpecError, match="'a' is declared twice"):
        M()


def test_dependency_on_later_name():
    class M(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Latent("a", lambda b: dist.Normal(b, 1)), Latent("b", lambda: dist.Normal(0, 1)))

    with pytest.raises(ModelSpecError, match="'a' depends on 'b'"):
        M()


def test_dependency_on_unknown_name():
    class M(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Latent("a", lambda: dist.Normal(0, 1)), Observed("y", lambda a, loc_typo: dist.Normal(a, 1)))

    m = M()
    guide = AutoNormalGuide(m)
    with pytest.raises(BatchError, match="'y' depends on 'loc_typo'"):
        Trace_ELBO()(m, guide, {"y": torch.tensor(0.0)})


def test_step_not_returning_a_distribution():
    class M(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Latent("a", lambda: 3.0))

    with pytest.raises(ModelSpecError, match="'a'.*Distribution"):
        AutoNormalGuide(M())


def test_plate_size_disagrees_with_prior_batch_shape():
    class M(MonadicProgram):
        def __init__(self):
            super().__init__()
            p = Plate("p", size=3)
            self.declare(Latent("a", lambda: dist.Normal(torch.zeros(4), 1.0), plate=p))

    with pytest.raises(ShapeError, match="'a'"):
        AutoNormalGuide(M())


def test_no_latent_sites_and_discrete_latents():
    class NoLatent(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Observed("y", lambda: dist.Normal(0.0, 1.0)))

    class Discrete(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Latent("k", lambda: dist.Poisson(3.0)))

    with pytest.raises(GuideError, match="no latent sites"):
        AutoNormalGuide(NoLatent())
    with pytest.raises(GuideError, match="'k'.*discrete"):
        AutoNormalGuide(Discrete())


def test_subsample_index_out_of_range_and_wrong_latent_value_shape():
    m = Model()
    with pytest.raises(BatchError, match="plate 'data'.*\\[0, 5\\)"):
        m.prepare({**GOOD, "data": torch.tensor([0, 9])})
    with pytest.raises(ShapeError, match="'rate'"):
        m.trace(GOOD, {"rate": torch.ones(3, 2)})
    with pytest.raises(BatchError, match="'nope'"):
        m.trace(GOOD, {"rate": torch.ones(1), "nope": torch.ones(1)})


def test_bad_plate_and_step_declarations():
    with pytest.raises(ModelSpecError, match="subsample_size"):
        Plate("p", size=3, subsample_size=5)
    with pytest.raises(ModelSpecError, match="dim"):
        Plate("p", size=3, dim=0)
    with pytest.raises(ModelSpecError, match="identifier"):
        Latent("a b", lambda: dist.Normal(0, 1))
    with pytest.raises(ModelSpecError, match="\\*args"):
        Latent("a", lambda *xs: dist.Normal(0, 1))


def test_validation_cache_rechecks_modified_tensors():
    model, batch = Model(), {k: v.clone() for k, v in GOOD.items()}
    guide = AutoNormalGuide(model)
    Trace_ELBO()(model, guide, batch)  # passes and is cached
    batch["counts"][1] = -1.0  # in-place write bumps the version counter
    with pytest.raises(SupportError, match="'counts'"):
        Trace_ELBO()(model, guide, batch)
    batch["counts"][1] = float("nan")
    with pytest.raises(BatchError, match="non-finite"):
        Trace_ELBO()(model, guide, batch)
    with torch.inference_mode():
        bad = {**GOOD, "counts": torch.tensor([1.0, -1.0, 3.0, 2.0, 1.0])}
        with pytest.raises(SupportError):
            Trace_ELBO()(model, guide, bad)
