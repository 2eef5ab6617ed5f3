"""Pareto-smoothed importance sampling: did the guide fit, and draws that correct it."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..guides.guide import Guide, Sites
from ..program import MonadicProgram
from ..validation import check_positive_int
from .elbo import weighted_draws

__all__ = ["PSISDiagnostic", "psis_diagnostic", "importance_draws", "psis_resample", "diagnose"]

# Vehtari et al. (2024), "Pareto smoothed importance sampling", JMLR 25(72), sec. 3 and
# Yao et al. (2018), sec. 3: below 0.5 the importance sampling estimate converges fast, up to
# 0.7 it is usable, above 0.7 its variance is too large to trust (and the guide with it).
GOOD_K, USABLE_K = 0.5, 0.7


@dataclass(frozen=True)
class PSISDiagnostic:
    """The Pareto k-hat of the guide's importance weights ``log p(x, z) - log q(z)``.

    Attributes
    ----------
    k_hat : float
        Estimated shape of the generalised Pareto tail of the weights (Yao, Vehtari,
        Simpson & Gelman 2018, "Yes, but did it work?"). ``nan`` when the weights are
        degenerate (every draw has a non-finite log density).
    num_particles : int
        Draws from the guide it is computed from.
    ess : float
        Effective sample size of the Pareto-smoothed, normalised weights
        ``1 / sum w_i^2`` (draws).
    log_evidence : float
        The importance sampling estimate ``log mean_i exp(log w_i)`` of ``log p(x)``
        (nats; an upper bound of the ELBO in expectation).
    """

    k_hat: float
    num_particles: int
    ess: float
    log_evidence: float

    @property
    def reading(self) -> str:
        """What ``k_hat`` says, with what to try when the guide is not to be trusted."""
        k = self.k_hat
        if not math.isfinite(k):
            return "undefined: no draw from the guide has a finite log density under the model"
        if k < GOOD_K:
            return "good (k-hat < 0.5): the guide is close to the posterior where it matters"
        if k < USABLE_K:
            return ("usable (0.5 <= k-hat < 0.7): the guide is roughly right; check its tails before relying on "
                    "them, or correct the draws with sample_posterior(..., psis=True)")
        return ("do not trust the guide (k-hat >= 0.7): the posterior has mass the guide misses; try a richer "
                "guide (AutoMultivariateNormal, then a flow such as AutoIAFNormal), a non-centred "
                "parameterisation, more steps or particles")

    def __float__(self) -> float:
        return self.k_hat

    def __str__(self) -> str:
        return (f"PSIS k-hat {self.k_hat:.3f} from {self.num_particles} draws (ESS {self.ess:.0f}): "
                f"{self.reading}")


@torch.no_grad()
def importance_draws(model: MonadicProgram, guide: Guide, batch: Mapping[str, Any] | None,
                     num_particles: int, chunk: int = 1000) -> tuple[Sites, torch.Tensor]:
    """Draws from the guide and their log importance weights, on the full batch.

    Returns
    -------
    z : dict
        ``{latent site: (num_particles, ...)}`` in the guide's internal layout (as
        :meth:`~quivers.guides.Guide.rsample` gives).
    log_w : Tensor
        ``log p(x, z) - log q(z)`` per draw, shape ``(num_particles,)`` (nats).

    Raises
    ------
    ConfigError
        If ``num_particles`` or ``chunk`` is not a positive int.
    """
    num_particles = check_positive_int(num_particles, "num_particles", ConfigError)
    chunk = check_positive_int(chunk, "chunk", ConfigError)
    prepared = model.prepare(batch, subsample=False)
    parts: list[tuple[Sites, torch.Tensor]] = []
    done = 0
    while done < num_particles:
        ss = torch.Size((min(chunk, num_particles - done),))
        parts.append(weighted_draws(model, guide, prepared, ss))
        done += ss[0]
    z = {k: torch.cat([p[0][k] for p in parts]) for k in parts[0][0]}
    return z, torch.cat([p[1] for p in parts])


def diagnose(log_w: torch.Tensor) -> tuple[PSISDiagnostic, np.ndarray]:
    """ArviZ's Pareto smoothing (``arviz.psislw``, relative efficiency 1: independent
    draws) of the log importance weights ``log_w`` (shape ``(S,)``): the diagnostic and the
    smoothed log weights (shape ``(S,)``, NumPy, unnormalised)."""
    import arviz as az

    lw = log_w.detach().double().cpu().numpy()
    lw = np.where(np.isfinite(lw), lw, -np.inf)
    if not np.isfinite(lw).any():
        smoothed, k = np.zeros_like(lw), math.nan
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ArviZ warns for k > 0.7; the reading says it
            out, k = az.psislw(lw, reff=1.0)
        smoothed, k = np.asarray(out), float(k)
    return PSISDiagnostic(k, len(lw), _ess(smoothed), _log_mean_exp(log_w)), smoothed


def psis_diagnostic(model: MonadicProgram, guide: Guide, batch: Mapping[str, Any] | None = None,
                    num_particles: int = 1000) -> PSISDiagnostic:
    """Pareto-smoothed importance sampling diagnostic of a fitted guide (Pyro's and NumPyro's
    ``psis_diagnostic``; Yao, Vehtari, Simpson & Gelman 2018, "Yes, but did it work?:
    Evaluating variational inference").

    Draws ``num_particles`` values from the guide, computes ``log p(x, z) - log q(z)`` on
    the full batch, and fits the generalised Pareto tail of the weights with ArviZ's PSIS
    (``arviz.psislw``; Vehtari et al. 2024). ``k_hat`` below 0.5 is good, 0.5-0.7 usable,
    above 0.7 the guide should not be trusted (:attr:`PSISDiagnostic.reading`).

    Parameters
    ----------
    model : MonadicProgram
        The model.
    guide : Guide
        The fitted guide (an ``AutoLaplaceApproximation`` is judged by its Laplace Gaussian).
    batch : mapping, optional
        The data, every plate in full.
    num_particles : int
        Draws from the guide (k-hat's standard error falls as ``1/sqrt(num_particles)``;
        Pyro's default 1000).

    Returns
    -------
    PSISDiagnostic
        ``float()`` of it is k-hat.

    Raises
    ------
    ConfigError
        If ``num_particles`` is not a positive int.
    """
    _, log_w = importance_draws(model, _sampler(guide, batch), batch, num_particles)
    return diagnose(log_w)[0]


def _ess(log_weights: np.ndarray) -> float:
    """``(sum w)^2 / sum w^2`` of (unnormalised) log weights (Kong 1992)."""
    w = np.exp(log_weights - log_weights.max()) if np.isfinite(log_weights).any() else np.ones_like(log_weights)
    return float(w.sum() ** 2 / np.square(w).sum())


def _log_mean_exp(log_w: torch.Tensor) -> float:
    finite = log_w[torch.isfinite(log_w)].double()
    return float(torch.logsumexp(finite, 0) - math.log(len(log_w))) if len(finite) else -math.inf


def psis_resample(model: MonadicProgram, guide: Guide, batch: Mapping[str, Any] | None, num_samples: int,
                  num_particles: int | None = None) -> tuple[Sites, PSISDiagnostic]:
    """Sampling-importance-resampling with Pareto-smoothed weights (Rubin 1988; Vehtari et
    al. 2024): ``num_particles`` draws from the guide, resampled with replacement in
    proportion to their smoothed weights. Exact as ``num_particles`` grows when k-hat < 0.7;
    ``num_particles`` defaults to ``max(1000, 10 num_samples)``.

    Returns
    -------
    z : dict
        ``{latent site: (num_samples, ...)}`` in the guide's internal layout.
    diagnostic : PSISDiagnostic
        Of the pool the draws come from.

    Warns
    -----
    UserWarning
        When k-hat >= 0.7: the resampled draws cannot be trusted either.
    """
    num_samples = check_positive_int(num_samples, "num_samples", ConfigError)
    pool = max(1000, 10 * num_samples) if num_particles is None else num_particles
    sampler = _sampler(guide, batch)
    z, log_w = importance_draws(model, sampler, batch, pool)
    diag, smoothed = diagnose(log_w)
    w = torch.as_tensor(np.exp(smoothed - smoothed.max()), dtype=torch.float64)
    if not diag.k_hat < USABLE_K:
        warnings.warn(f"sample_posterior(psis=True): {diag}; the resampled draws are not reliable either",
                      stacklevel=3)
    idx = torch.multinomial(w, num_samples, replacement=True).to(log_w.device)
    return {k: v[idx] for k, v in z.items()}, diag


def _sampler(guide: Guide, batch: Mapping[str, Any] | None) -> Guide:
    """The distribution a guide's posterior draws come from (the Laplace Gaussian for
    ``AutoLaplaceApproximation``, whose training point is a delta)."""
    from ..guides.laplace import AutoLaplaceApproximation

    return guide.laplace_approximation(batch) if isinstance(guide, AutoLaplaceApproximation) else guide
