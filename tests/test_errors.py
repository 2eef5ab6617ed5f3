"""Checks beyond the bad-input catalogue (tests/test_error_catalogue.py): latent values
given to ``trace``, and the validation cache."""

import pytest
import torch
from error_catalogue import GOOD, Counts
from torch import distributions as dist

from quivers import Latent, MonadicProgram, Observed, Plate
from quivers.errors import BatchError, ShapeError, SupportError
from quivers.guides import AutoNormalGuide
from quivers.infer import Trace_ELBO


def test_trace_checks_given_latent_values():
    m = Counts()
    with pytest.raises(ShapeError, match="'rate'"):
        m.trace(GOOD, {"rate": torch.ones(3, 2)})
    with pytest.raises(BatchError, match="'nope'"):
        m.trace(GOOD, {"rate": torch.ones(1), "nope": torch.ones(1)})


def test_validation_cache_rechecks_modified_tensors():
    model, batch = Counts(), {k: v.clone() for k, v in GOOD.items()}
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


def _count_checks(monkeypatch) -> list:
    """Patch the batch's field checks to count their runs."""
    from quivers.program import batch as batch_module

    calls, real = [], batch_module._validate_fields
    monkeypatch.setattr(batch_module, "_validate_fields", lambda p, b: (calls.append(1), real(p, b))[1])
    return calls


def test_an_unchanged_batch_is_checked_once_and_a_changed_one_again(monkeypatch):
    model, batch = Counts(), {k: v.clone() for k, v in GOOD.items()}
    calls = _count_checks(monkeypatch)
    first, second = model.prepare(batch), model.prepare(batch)
    assert len(calls) == 1
    assert second is not first and list(second) == list(first)
    assert all(second[k] is first[k] is batch[k] for k in batch)
    assert second.plate_rows == first.plate_rows == {"data": 5}
    second.plate_rows["data"] = 99  # a caller's change to a prepared batch does not leak into the next
    assert model.prepare(batch).plate_rows == {"data": 5}
    model.prepare(dict(batch))  # the same tensors in a new dict
    assert len(calls) == 1
    batch["counts"][0] = float("nan")  # in place: the version counter moves, so it is checked again
    with pytest.raises(BatchError, match="non-finite"):
        model.prepare(batch)
    batch["counts"] = GOOD["counts"].clone()  # another tensor under the same name
    model.prepare(batch)
    assert len(calls) == 3
    with pytest.raises(BatchError, match="'extra'"):  # an unknown field is not hidden by the earlier plan
        model.prepare({**batch, "extra": torch.ones(1)})


def test_the_batch_plan_follows_validation_device_and_subsampling(monkeypatch):
    import gc
    import weakref

    from quivers import validation_enabled
    from quivers.datasets.real import EIGHT_SCHOOLS_SIGMA, EIGHT_SCHOOLS_Y
    from quivers.models import EightSchools

    model = EightSchools()
    batch = {"y": torch.tensor(EIGHT_SCHOOLS_Y), "sigma": torch.tensor(EIGHT_SCHOOLS_SIGMA)}
    calls = _count_checks(monkeypatch)
    model.prepare(batch)
    with validation_enabled(False):
        model.prepare(batch)
    model.prepare(batch)
    assert len(calls) == 2  # the validation switch is part of the plan: checked again after an unchecked one
    model.to("meta")  # the device is part of the plan: the CPU batch no longer fits
    with pytest.raises(BatchError, match="on cpu but the model's parameters and buffers are on meta"):
        model.prepare(batch)
    ref = weakref.ref(batch["y"])
    del batch
    gc.collect()
    assert ref() is None  # the plan holds no data alive

    class Sub(MonadicProgram):
        def __init__(self) -> None:
            super().__init__()
            self.declare(Latent("m", lambda: dist.Normal(0.0, 1.0)),
                         Observed("y", lambda m: dist.Normal(m, 1.0), plate=Plate("data", size=100, subsample_size=10)))

    sub, data = Sub(), {"y": torch.randn(100)}
    draws = [sub.prepare(data)["data"] for _ in range(5)]  # indices are drawn afresh at every preparation
    assert len({tuple(d.tolist()) for d in draws}) > 1
    assert sub.prepare(data, subsample=False).plate_rows == {"data": 100}
    assert sub.prepare(data, subsample=False).plate_rows == {"data": 100}



def _prior():
    return dist.Normal(0.0, 1.0)


def _likelihood(m):
    return dist.Normal(m, 1.0)


class Picklable(MonadicProgram):
    """A program of module-level step functions, so that it pickles."""

    def __init__(self) -> None:
        super().__init__()
        self.declare(Latent("m", _prior), Observed("y", _likelihood, plate=Plate("data")))


def test_a_used_program_pickles_and_its_copy_checks_again():
    import pickle

    model = Picklable()
    batch = {"y": torch.randn(5)}
    Trace_ELBO()(model, AutoNormalGuide(model), batch)  # fills the validation cache and the batch plan
    copy = pickle.loads(pickle.dumps(model))  # used to fail: weak references cannot be pickled
    assert copy._checked.batch_plan is None and not copy._checked._passed
    with pytest.raises(BatchError, match="non-finite"):
        copy.prepare({"y": torch.tensor([0.0, float("nan")])})
    assert copy.prepare(batch).plate_rows == {"data": 5}
