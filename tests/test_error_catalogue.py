"""Every case of the bad-input catalogue raises its documented error, and changes nothing."""

from __future__ import annotations

import pytest
from error_catalogue import CASES, Context, documented, render, same

from quivers.errors import QuiversError


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_raises_its_typed_error_before_anything_changes(case, tmp_path):
    attempt = case.make(Context(tmp_path))
    before = attempt.state()
    with pytest.raises(case.error, match=case.match) as info:
        attempt.call()
    assert type(info.value) is case.error  # exactly the documented class, not a relative
    assert isinstance(info.value, QuiversError) and isinstance(info.value, ValueError)
    assert same(before, attempt.state()), f"{case.id} changed state before raising"


def test_catalogue_has_at_least_25_distinct_cases():
    assert len({c.id for c in CASES}) == len(CASES) >= 25
    assert len({c.input for c in CASES}) == len(CASES)


def test_docs_table_is_current():
    assert render() == documented(), "docs/errors.md is stale: run .venv/bin/python tests/error_catalogue.py --write"
