"""``laplace_warm_start``: start a guide at the Laplace approximation found by L-BFGS."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..errors import GuideError
from .guide import Batch, Guide
from .laplace import AutoLaplaceApproximation

__all__ = ["laplace_warm_start", "WarmStart"]


@dataclass
class WarmStart:
    """What :func:`laplace_warm_start` did.

    Attributes
    ----------
    neg_log_density : float
        Negative unconstrained log joint at the mode found (nats).
    clipped : int
        Hessian eigenvalues replaced by ``max(|lambda|, min_precision)`` (0 when the
        Hessian was positive definite with every eigenvalue above ``min_precision``).
    """

    neg_log_density: float
    clipped: int


def laplace_warm_start(
    guide: Guide,
    batch: Batch,
    max_iter: int = 500,
    min_precision: float = 1e-2,
    num_restarts: int = 0,
    seed: int = 0,
) -> WarmStart:
    """Set a Gaussian guide to the Laplace approximation of the posterior.

    Starting from the guide's current median, L-BFGS finds the mode ``u*`` of the
    unconstrained log posterior (:meth:`AutoLaplaceApproximation.fit_map`); the Hessian
    ``H`` of the negative log joint there gives the covariance ``H^-1``. The guide then
    takes the mean ``u*`` and the member of its family closest to ``H^-1``: exact for
    ``AutoMultivariateNormal``, the marginal variances for diagonal guides, a
    probabilistic-PCA fit for low-rank ones, the diagonal blocks for ``AutoBatched*``.
    SVI from there refines what the Laplace approximation gets wrong (skew, heavy
    tails) instead of spending its first thousands of steps finding the mode and the
    scales; this is the recommended start (see the accuracy benchmark in the docs).

    Parameters
    ----------
    guide : Guide
        An ``AutoNormalGuide``, ``AutoDiagonalNormal``, ``AutoMultivariateNormal``,
        ``AutoLowRankMultivariateNormal``, ``AutoBatched*``, ``AutoLaplaceApproximation``
        or a flow guide (its final affine map takes the mean and marginal sds), with no
        local latents in subsampled plates.
    batch : mapping
        The data (full plates).
    max_iter : int
        Largest number of L-BFGS iterations.
    min_precision : float
        Floor on the Hessian's eigenvalues (precision, in unconstrained units^-2): an
        eigenvalue ``lambda`` becomes ``max(|lambda|, min_precision)``, so a direction that
        is flat or not a minimum starts with a scale of at most ``min_precision^-1/2``
        (10 by default) instead of an error. A ``UserWarning`` reports how many.
    num_restarts : int
        Further L-BFGS runs from points drawn uniformly in ``(-2, 2)`` in unconstrained
        space (Stan's initialisation); the mode with the highest log joint wins, and a
        restart replaces the first mode only if it is higher by more than 1e-3 nats.
        For multimodal posteriors (mixtures), where one local search can stop at a poor
        mode.
    seed : int
        Seed of the restarts' own generator (torch's global random stream is not used).

    Returns
    -------
    WarmStart
        The chosen mode's negative log joint and the number of clipped eigenvalues.

    Raises
    ------
    GuideError
        If the guide's family has no Gaussian to set (structured and custom guides),
        it has local latents in a subsampled plate, or the L-BFGS search fails
        (non-finite log joint). The guide is unchanged when it raises.
    """
    setter = getattr(guide, "_set_moments", None)
    if setter is None:
        raise GuideError(
            f"laplace_warm_start: {type(guide).__name__} has no Gaussian to set; it supports AutoNormalGuide, "
            "AutoDiagonalNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal, AutoBatched* and "
            "AutoLaplaceApproximation and the flow guides")
    if not min_precision > 0:
        raise GuideError(f"laplace_warm_start: min_precision must be positive, got {min_precision!r}")
    ref = next(guide.parameters())
    lap = AutoLaplaceApproximation(guide.model, guide.observed_names, init_loc_fn=guide.init_loc_fn)
    lap.to(dtype=ref.dtype, device=ref.device)
    dtype = ref.dtype
    prepared = guide.model.prepare(batch, subsample=False)
    with torch.no_grad():
        start = {k: v.to(dtype) for k, v in guide.latent_median(prepared).items()}
        lap.loc.copy_(lap.unconstrained(start, prepared))
    value = lap.fit_map(batch, max_iter=max_iter)
    best = lap.loc.detach().clone()
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    for _ in range(int(num_restarts)):
        with torch.no_grad():
            lap.loc.copy_((torch.rand(lap.loc.shape, generator=gen, dtype=dtype) * 4 - 2).to(ref.device))
        try:
            candidate = lap.fit_map(batch, max_iter=max_iter)
        except GuideError:  # a start where the log joint is not finite: skip it
            continue
        if candidate < value - 1e-3:
            value, best = candidate, lap.loc.detach().clone()
    with torch.no_grad():
        lap.loc.copy_(best)
    h = lap.hessian(batch).detach()
    if not bool(torch.isfinite(h).all()):
        raise GuideError("laplace_warm_start: the Hessian at the mode is not finite")
    evals, evecs = torch.linalg.eigh(h)
    clipped = int((evals < min_precision).sum())
    if clipped:
        warnings.warn(
            f"laplace_warm_start: {clipped} of {len(evals)} Hessian eigenvalues below min_precision="
            f"{min_precision:g} (smallest {float(evals[0]):.3g}); replaced by max(|lambda|, min_precision)",
            stacklevel=2)
    evals = evals.abs().clamp_min(min_precision)
    cov = (evecs / evals.unsqueeze(-2)) @ evecs.mT
    cov = 0.5 * (cov + cov.mT)
    loc = lap.loc.detach()
    batch_ndim = getattr(guide, "batch_ndim", 0)
    if batch_ndim:  # reorder the site-major flat vector into the guide's blocks
        reg = lap.registry
        idx = reg.pack(reg.unpack(torch.arange(reg.size, device=ref.device)), batch_ndim=batch_ndim)
        loc, cov = loc[idx], cov[idx.unsqueeze(-1), idx.unsqueeze(-2)]
    setter(loc, cov)
    return WarmStart(value, clipped)
