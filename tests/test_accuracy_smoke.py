"""Smoke run of the accuracy benchmark (the full run is `make bench-accuracy`) and its metrics."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from quivers.guides import AutoNormalGuide
from quivers.models.posteriordb import POSTERIORS, default_root, load_posterior

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
needs_data = pytest.mark.skipif(not default_root().exists(), reason="../shared/posteriordb is not beside the repo")


def test_metrics_against_known_shifts():
    from accuracy import metrics

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(10000, 2))
    same = metrics(ref.copy(), ref)
    assert same["mean_std_w1"] == 0 and same["max_std_mean_err"] == 0
    shifted = metrics(ref + np.array([1.0, 0.0]) * ref.std(0), ref)  # one sd on the first coordinate
    assert abs(shifted["max_std_mean_err"] - 1) < 1e-9
    assert abs(shifted["mean_std_w1"] - 0.5) < 1e-9  # W1 of a pure shift is the shift: (1 + 0) / 2
    wide = metrics(ref * 2, ref)
    assert abs(wide["max_abs_log_sd_ratio"] - np.log(2)) < 1e-9


@needs_data
@pytest.mark.parametrize("name", list(POSTERIORS))
def test_every_posterior_maps_draws_to_reference_names(name):
    post = load_posterior(name)
    guide = AutoNormalGuide(post.model, init_loc_fn="quivers.guides.init_to_uniform")
    values = post.model.reference_values(guide.sample_posterior(post.batch, (3,)), post.batch)
    assert list(values) == post.names
    assert all(v.shape == (3,) for v in values.values())
    assert post.draws.shape == (10000, len(post.names))
    assert torch.isfinite(post.model.log_joint(post.batch, guide.sample_posterior(post.batch))).all()
    assert torch.isfinite(post.model.log_joint(post.batch, guide.rsample(post.batch))).all()


@needs_data
def test_accuracy_benchmark_smoke_run(tmp_path):
    out, md = tmp_path / "acc.json", tmp_path / "acc.md"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "accuracy.py"), "--posteriors",
                        "kidiq-kidscore_momhsiq,arK-arK", "--guides", "AutoNormal,AutoMultivariateNormal",
                        "--steps", "50", "--draws", "500", "--out", str(out), "--markdown", str(md)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == 12  # 2 posteriors x 2 guides x 3 settings
    assert {r["setting"] for r in rows} == {"default", "anchors", "recommended"}
    for row in rows:
        assert np.isfinite(row["mean_std_w1"]) and row["fit_s"] > 0, row
        if row["setting"] == "default":  # SVI.run with the cap: its k-hat is reported
            assert np.isfinite(row["k_hat"]) and 0 < row["svi_steps"] <= 50, row
    text = md.read_text()
    assert "| arK-arK |" in text and "### Targets" in text and "### Reference shape" in text
    assert "PSIS k-hat" in text and "Default AutoMultivariateNormal" in text


def test_standardized_w1_of_a_shift_is_the_shift_in_sds():
    """W1 between N(0, 2) and N(1, 2) is the shift, 1, which is 0.5 reference sd; for
    20,000 draws each the empirical estimate is within ~0.03 of it."""
    import numpy as np

    from quivers.models.posteriordb import standardized_w1

    rng = np.random.default_rng(0)
    ref = rng.normal(0.0, 2.0, (20000, 2))
    draws = np.stack([rng.normal(1.0, 2.0, 20000), rng.normal(0.0, 2.0, 20000)], -1)
    w1 = standardized_w1(draws, ref)
    assert abs(w1[0] - 0.5) < 0.03 and w1[1] < 0.03
