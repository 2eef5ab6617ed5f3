"""``NeuTraReparam``: the program in a trained guide's coordinates, its log density against
``log p(x, T(w)) + log|det dT/dw|`` with the Jacobian taken by autograd, and NUTS through it
against posteriordb's reference draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import perturbed

from quivers.errors import ModelSpecError
from quivers.guides import AutoIAFNormal, AutoLowRankMultivariateNormal, AutoMultivariateNormal, AutoNormalGuide
from quivers.infer import MCMC, NUTS, SVI, NeuTraReparam
from quivers.models import EightSchools
from quivers.models.posteriordb import default_root, load_posterior, standardized_w1

Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
BATCH = {"y": Y, "sigma": SIGMA}


pytestmark = pytest.mark.usefixtures("float64")


@pytest.mark.parametrize("guide_cls", [AutoMultivariateNormal, AutoIAFNormal])
def test_log_density_is_the_posterior_pulled_back_through_the_guide(guide_cls):
    """log p_neutra(w) = log p(x, T(w)) + log|det dT/dw|, with T : R^10 -> (mu, tau, eta)
    and its Jacobian computed by autograd (independently of the flows' log-determinants)."""
    torch.manual_seed(0)
    model = EightSchools()
    guide = perturbed(guide_cls(model))
    neutra = NeuTraReparam(guide)
    program = model.reparam(neutra)
    assert program.latent_names == ["shared_latent"]
    for _ in range(2):
        w = torch.randn(10)

        def flat(w):
            z = neutra.transform_samples(w[None])
            return torch.cat([z["mu"].reshape(-1), z["tau"].reshape(-1), z["eta"].reshape(-1)])

        jac = torch.autograd.functional.jacobian(flat, w.requires_grad_())
        w = w.detach()
        z = {k: v[0] for k, v in neutra.transform_samples(w[None]).items()}
        hand = model.log_joint(BATCH, z) + torch.linalg.slogdet(jac)[1]
        got = program.log_joint(BATCH, {"shared_latent": w})
        torch.testing.assert_close(got, hand, rtol=1e-8, atol=1e-8)


def test_bad_guides_are_refused():
    model = EightSchools()
    with pytest.raises(ModelSpecError, match="needs an AutoContinuous guide"):
        NeuTraReparam(AutoNormalGuide(model))
    with pytest.raises(ModelSpecError, match="not a transform of a Normal base"):
        NeuTraReparam(AutoLowRankMultivariateNormal(model))
    with pytest.raises(ModelSpecError, match="built for another EightSchools instance"):
        EightSchools().reparam(NeuTraReparam(AutoMultivariateNormal(model)))


needs_data = pytest.mark.skipif(not default_root().exists(), reason="../shared/posteriordb is not beside the repo")


@needs_data
@pytest.mark.slow
def test_nuts_through_a_fitted_guide_matches_the_reference_draws():
    """Fit AutoMultivariateNormal (SVI.run), run NUTS (2 x 500 after 500 warm-up) on the
    NeuTra program, map the draws back: mean standardised W1 <= 0.1 against posteriordb's
    10,000 reference draws (see test_mcmc.py for the bound)."""
    torch.manual_seed(0)
    post = load_posterior("eight_schools-eight_schools_noncentered")
    guide = AutoMultivariateNormal(post.model)
    SVI(post.model, guide).run(post.batch, progress_bar=False)
    neutra = NeuTraReparam(guide)
    mcmc = MCMC(NUTS(post.model.reparam(neutra)), num_samples=500, warmup_steps=500, num_chains=2).run(post.batch)
    z = neutra.transform_samples(mcmc.get_samples()["shared_latent"])
    values = post.model.reference_values(z, post.batch)
    draws = np.stack([values[n].numpy() for n in post.names], -1)
    w1 = standardized_w1(draws, post.draws)
    assert w1.mean() <= 0.1
