"""``laplace_warm_start``: start a guide at the Laplace approximation of the posterior."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..errors import GuideError
from .guide import Batch, Guide
from .laplace import AutoLaplaceApproximation
from .map_search import CONVERGED_SD, hessian, lbfgs_search, newton_decrement, newton_search

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
    converged : bool
        Whether the chosen search reached a mode: its Newton decrement
        ``sqrt(g^T H^-1 g)`` is below ``1e-3`` posterior sds (a ``UserWarning`` says so
        when not).
    method : str
        ``"newton"`` or ``"lbfgs"``.
    iterations : int
        Newton iterations or L-BFGS evaluations of the chosen search.
    loc : Tensor
        The mode in the guide's flat unconstrained coordinates (its block order for
        ``AutoBatched*``), shape ``batch_shape + (D,)``, float64.
    cov : Tensor
        The (clipped) inverse Hessian there, shape ``batch_shape + (D, D)``, float64.
    """

    neg_log_density: float
    clipped: int
    converged: bool = True
    method: str = "lbfgs"
    iterations: int = 0
    loc: torch.Tensor | None = None
    cov: torch.Tensor | None = None


@contextmanager
def promoted(model: torch.nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Run with the model's floating parameters and buffers in ``dtype``, then restore each
    to its own dtype (float32 -> float64 -> float32 is exact, so nothing is lost)."""
    tensors = [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]
    saved = [t.dtype for t in tensors]
    try:
        with torch.no_grad():
            for t in tensors:
                t.data = t.data.to(dtype)
        yield
    finally:
        with torch.no_grad():
            for t, d in zip(tensors, saved, strict=True):
                t.data = t.data.to(d)


def _as_dtype(batch: Batch, dtype: torch.dtype) -> Batch:
    if batch is None:
        return None
    return {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in batch.items()}


def laplace_warm_start(
    guide: Guide,
    batch: Batch,
    max_iter: int | None = None,
    min_precision: float = 1e-2,
    num_restarts: int = 0,
    seed: int = 0,
    *,
    method: str = "auto",
    dtype: torch.dtype | None = torch.float64,
    newton_max_dim: int = 200,
) -> WarmStart:
    """Set a Gaussian guide to the Laplace approximation of the posterior.

    Starting from the guide's current median, a MAP search finds the mode ``u*`` of the
    unconstrained log posterior, in float64 by default whatever the model's dtype
    (the model is promoted for the search and restored exactly afterwards): damped
    saddle-free Newton steps with the exact autograd Hessian when the latent dimension is
    at most ``newton_max_dim`` (:func:`~quivers.guides.map_search.newton_search`),
    L-BFGS with a strong-Wolfe line search above. The Hessian ``H`` of the negative log
    joint there gives the covariance ``H^-1``. The guide then takes the mean ``u*`` and the
    member of its family closest to ``H^-1``: exact for ``AutoMultivariateNormal``, the
    marginal variances for diagonal guides, a probabilistic-PCA fit for low-rank ones, the
    diagonal blocks for ``AutoBatched*``. SVI from there refines what the Laplace
    approximation gets wrong (skew, heavy tails) instead of spending its first thousands of
    steps finding the mode and the scales; :meth:`SVI.run <quivers.infer.SVI.run>` does
    this by default.

    Parameters
    ----------
    guide : Guide
        An ``AutoNormalGuide``, ``AutoDiagonalNormal``, ``AutoMultivariateNormal``,
        ``AutoLowRankMultivariateNormal``, ``AutoBatched*``, ``AutoLaplaceApproximation``,
        a flow guide (its final affine map takes the mean and marginal sds) or
        ``AutoDAIS`` (its base takes the Gaussian, its annealing the Gaussian's whitened
        coordinates),
        with no local latents in subsampled plates.
    batch : mapping
        The data (full plates).
    max_iter : int, optional
        Largest number of Newton iterations (default 100) or L-BFGS iterations (default
        1000) per search.
    min_precision : float
        Floor on the Hessian's eigenvalues (precision, in unconstrained units^-2): an
        eigenvalue ``lambda`` becomes ``max(|lambda|, min_precision)``, so a direction that
        is flat or not a minimum starts with a scale of at most ``min_precision^-1/2``
        (10 by default) instead of an error. A ``UserWarning`` reports how many.
    num_restarts : int
        Further searches from points drawn uniformly in ``(-2, 2)`` in unconstrained
        space (Stan's initialisation); the mode with the highest log joint wins, and a
        restart replaces the first mode only if it is higher by more than 1e-3 nats.
        For multimodal posteriors (mixtures), where one local search can stop at a poor
        mode.
    seed : int
        Seed of the restarts' own generator (torch's global random stream is not used).
    method : {"auto", "newton", "lbfgs"}
        The search; ``"auto"`` picks Newton up to ``newton_max_dim`` latent dimensions.
    dtype : torch.dtype or None
        The dtype of the search (default float64); ``None``: the guide's.
    newton_max_dim : int
        Largest latent dimension for which ``"auto"`` uses Newton (each iteration costs
        one Hessian: ``D`` backward passes).

    Returns
    -------
    WarmStart
        The chosen mode, its covariance, whether the search converged.

    Raises
    ------
    GuideError
        If the guide's family has no Gaussian to set (structured and custom guides), it has
        local latents in a subsampled plate, ``method`` is unknown, or the search fails
        (non-finite log joint). The guide is unchanged when it raises.

    Warns
    -----
    UserWarning
        When the search did not converge (a posterior without a mode, such as a funnel, or
        flat in some direction), or Hessian eigenvalues were clipped.
    """
    setter = getattr(guide, "_set_moments", None)
    if setter is None:
        raise GuideError(
            f"laplace_warm_start: {type(guide).__name__} has no Gaussian to set; it supports AutoNormalGuide, "
            "AutoDiagonalNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal, AutoBatched* and "
            "AutoLaplaceApproximation, the flow guides and AutoDAIS")
    if not min_precision > 0:
        raise GuideError(f"laplace_warm_start: min_precision must be positive, got {min_precision!r}")
    if method not in ("auto", "newton", "lbfgs"):
        raise GuideError(f"laplace_warm_start: method must be 'auto', 'newton' or 'lbfgs', got {method!r}")
    ref = next(guide.parameters())
    work = ref.dtype if dtype is None else dtype
    with torch.no_grad():
        # a flat guide's own unconstrained median is the start (no sampling, no Hessian: the
        # Laplace guide's constrained median would need one at a point that is no mode yet)
        own = guide._search_start() if (hasattr(guide, "_search_start")
                                        and getattr(guide, "batch_ndim", 0) == 0) else None
        start_sites = None if own is not None else guide.latent_median(guide.model.prepare(batch, subsample=False))
    with promoted(guide.model, work):
        lap = AutoLaplaceApproximation(guide.model, guide.observed_names, init_loc_fn=guide.init_loc_fn)
        lap.to(dtype=work, device=ref.device)
        data = _as_dtype(batch, work)
        prepared = guide.model.prepare(data, subsample=False)
        with torch.no_grad():
            start = (own.detach().to(work) if own is not None
                     else lap.unconstrained({k: v.to(work) for k, v in start_sites.items()}, prepared))
        potential = lap._potential(data)
        use_newton = method == "newton" or (method == "auto" and lap.latent_dim <= newton_max_dim)
        search = newton_search if use_newton else lbfgs_search
        iters = max_iter if max_iter is not None else (100 if use_newton else 1000)
        with torch.no_grad():
            if not math.isfinite(float(potential(start))):
                raise GuideError("laplace_warm_start: the log joint is not finite at the guide's median")
        best = search(potential, start, iters)
        if not (math.isfinite(best.value) and bool(torch.isfinite(best.point).all())):
            raise GuideError(f"laplace_warm_start: the MAP search reached a non-finite point (log joint "
                             f"{-best.value}); the guide is unchanged")
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        for _ in range(int(num_restarts)):
            point = (torch.rand(start.shape, generator=gen, dtype=work) * 4 - 2).to(ref.device)
            with torch.no_grad():
                if not math.isfinite(float(potential(point))):
                    continue  # a start where the log joint is not finite: skip it
            candidate = search(potential, point, iters)
            if math.isfinite(candidate.value) and candidate.value < best.value - 1e-3:
                best = candidate
        h = best.hessian if best.hessian is not None else hessian(potential, best.point)
        if not bool(torch.isfinite(h).all()):
            raise GuideError("laplace_warm_start: the Hessian at the mode is not finite")
    decrement = newton_decrement(best.gradient.to(torch.float64), h.to(torch.float64))
    converged = decrement < CONVERGED_SD if best.method == "lbfgs" else best.converged
    if not converged:
        warnings.warn(
            f"laplace_warm_start: the MAP search ({best.method}, {best.iterations} iterations) did not reach a mode "
            f"(the Newton step left is {decrement:.3g} posterior sds): the posterior may have no mode (a funnel: "
            "try a non-centred parameterisation) or be flat in some direction (give that site a proper prior); "
            "the guide starts at the last point", stacklevel=2)
    evals, evecs = torch.linalg.eigh(h.to(torch.float64))
    clipped = int((evals < min_precision).sum())
    if clipped:
        warnings.warn(
            f"laplace_warm_start: {clipped} of {len(evals)} Hessian eigenvalues below min_precision="
            f"{min_precision:g} (smallest {float(evals[0]):.3g}); replaced by max(|lambda|, min_precision)",
            stacklevel=2)
    evals = evals.abs().clamp_min(min_precision)
    cov = (evecs / evals.unsqueeze(-2)) @ evecs.mT
    cov = 0.5 * (cov + cov.mT)
    loc = best.point.to(torch.float64)
    batch_ndim = getattr(guide, "batch_ndim", 0)
    if batch_ndim:  # reorder the site-major flat vector into the guide's blocks
        reg = lap.registry
        idx = reg.pack(reg.unpack(torch.arange(reg.size, device=ref.device)), batch_ndim=batch_ndim)
        loc, cov = loc[idx], cov[idx.unsqueeze(-1), idx.unsqueeze(-2)]
    setter(loc.to(ref.dtype), cov.to(ref.dtype))
    return WarmStart(best.value, clipped, converged, best.method, best.iterations, loc, cov)
