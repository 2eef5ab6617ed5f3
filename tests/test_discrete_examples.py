"""The discrete-latent examples fitted with their default recipe (``SVI.run`` with
``TraceEnum_ELBO``), checked against the truth or an external reference."""

from __future__ import annotations

from sklearn.metrics import adjusted_rand_score

from quivers.datasets import ChangePointData, HMMData, load_iris
from quivers.guides import AutoNormalGuide
from quivers.infer import SVI, TraceEnum_ELBO, infer_discrete
from quivers.models import ChangePoint, GaussianHMM, GaussianMixture


def _fit(model, data, num_steps):
    guide = AutoNormalGuide(model)
    SVI(model, guide, loss=TraceEnum_ELBO()).run(data, num_steps=num_steps, progress_bar=False)
    return guide


def test_gaussian_mixture_on_iris_recovers_the_species():
    """Adjusted Rand index of the MAP clustering (given one posterior draw) against the three
    species >= 0.8. scikit-learn's EM for the same full-covariance mixture reaches 0.904 on
    these standardized data (5 seeds); the Laplace warm start's restarts pick its mode."""
    d = load_iris()
    model = GaussianMixture(num_data=150)
    guide = _fit(model, {"x": d["x"]}, 3000)
    c = infer_discrete(model, guide, {"x": d["x"]}, temperature=0)["c"].reshape(-1)
    assert adjusted_rand_score(d["species"], c) >= 0.8


def test_hmm_recovers_its_transition_matrix_and_path():
    """1,000 simulated steps: each transition probability within 0.06 of the truth (each
    row has ~330 transitions, so a probability's posterior sd is at most ~0.027), and the
    Viterbi path right at >= 90% of the steps (the emissions overlap: locs 2 apart,
    scale 0.7)."""
    data = HMMData(num_steps=1000)
    model = GaussianHMM(3, 1000)
    guide = _fit(model, {"y": data.fields["y"]}, 2000)
    trans = guide.sample_posterior(None, (500,))["trans"].mean(0)
    assert (trans - data.true_trans).abs().max() < 0.06
    z = infer_discrete(model, guide, {"y": data.fields["y"]}, temperature=0)["z"].reshape(-1)
    assert (z == data.true_z).double().mean() >= 0.9


def test_changepoint_posterior_concentrates_near_the_truth():
    """100 counts, rate 3 then 1 from step 40: at least half the posterior mass of the change
    point within 5 steps of 40, and each rate's posterior mean within 25% of its truth
    (40 and 60 counts inform them: relative sds ~9% and ~13%)."""
    data = ChangePointData()
    model = ChangePoint(100)
    guide = _fit(model, {"y": data.fields["y"]}, 2000)
    draws = infer_discrete(model, guide, {"y": data.fields["y"]}, temperature=1, num_samples=1000)
    tau = draws["tau"].reshape(-1).double()
    assert ((tau - 40).abs() <= 5).double().mean() >= 0.5
    assert abs(float(draws["early"].mean()) - 3.0) < 0.75
    assert abs(float(draws["late"].mean()) - 1.0) < 0.25
    assert int(data.true_tau) == 40
