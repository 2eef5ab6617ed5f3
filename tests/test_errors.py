"""Checks beyond the bad-input catalogue (tests/test_error_catalogue.py): latent values
given to ``trace``, and the validation cache."""

import pytest
import torch
from error_catalogue import GOOD, Counts

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
