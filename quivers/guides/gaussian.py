"""The Gaussian family over the flat unconstrained latent vector.

``AutoDiagonalNormal``, ``AutoMultivariateNormal`` (scale x unit lower Cholesky),
``AutoLowRankMultivariateNormal`` and their block-diagonal ``AutoBatched*`` variants
(the anchors' names and knobs: Pyro's and NumPyro's autoguides).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import (
    AffineTransform,
    Distribution,
    Independent,
    LowRankMultivariateNormal,
    MultivariateNormal,
    Normal,
    Transform,
)

from ..errors import GuideError
from ..program import MonadicProgram, PreparedBatch
from .continuous import AutoContinuous
from .guide import Batch
from .initialization import InitFn, check_init_scale, init_to_median
from .transforms import LowerCholeskyAffine, inv_softplus

__all__ = [
    "AutoDiagonalNormal", "AutoMultivariateNormal", "AutoLowRankMultivariateNormal",
    "AutoBatchedMultivariateNormal", "AutoBatchedLowRankMultivariateNormal",
]


class _AutoGaussian(AutoContinuous):
    """Shared part of the Gaussian guides: ``loc``, a positive ``scale`` per coordinate
    (softplus of ``scale_raw``), and the closed-form median and quantiles."""

    def __init__(
        self,
        model: MonadicProgram,
        observed_names: Sequence[str] | None,
        init_loc_fn: InitFn | str,
        init_scale: float,
        batch_ndim: int,
    ) -> None:
        init_scale = check_init_scale(init_scale)
        super().__init__(model, observed_names, init_loc_fn, batch_ndim)
        self.init_scale = float(init_scale)
        self.loc = nn.Parameter(self._init_loc())
        self.scale_raw = nn.Parameter(torch.full_like(self.loc, float(inv_softplus(self.init_scale))))

    @property
    def scale(self) -> torch.Tensor:
        """Positive per-coordinate scale, shape ``batch_shape + (latent_dim,)``."""
        return F.softplus(self.scale_raw)

    def _unconstrained_median(self) -> torch.Tensor:
        """The median of a Normal is its ``loc``."""
        return self.loc

    @torch.no_grad()
    def _set_moments(self, loc: torch.Tensor, cov: torch.Tensor) -> None:
        """Warm-start hook: set the mean to ``loc`` (``batch_shape + (D,)``) and the
        covariance to the member of the family closest to ``cov`` (``batch_shape + (D, D)``,
        positive definite)."""
        self.loc.copy_(loc)
        self._set_covariance(cov)

    def _set_covariance(self, cov: torch.Tensor) -> None:
        raise NotImplementedError

    def _whitening_map(self, cov: torch.Tensor) -> torch.Tensor:
        """The linear map ``C`` of :meth:`~AutoContinuous.whitened` for the covariance ``cov``
        (``batch_shape + (D, D)``): the marginal sds (diagonal, ``batch_shape + (D,)``),
        under which this family is closed."""
        return cov.diagonal(dim1=-2, dim2=-1).sqrt()

    def _loc_whitening(self, cov: torch.Tensor) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """For :class:`~quivers.infer.WhitenedAdam`: ``loc`` steps in units of
        :meth:`_whitening_map` of ``cov``."""
        return [(self.loc, self._whitening_map(cov))]

    @torch.no_grad()
    def _fold_whitening(self, shift: torch.Tensor, c: torch.Tensor) -> None:
        """Rewrite the parameters so that the guide over ``u`` equals the current guide
        over ``w`` pushed through ``u = shift + C w`` (``C`` diagonal here: the scales
        multiply, the correlation structure is unchanged)."""
        self.loc.copy_(shift + c * self.loc)
        self.scale_raw.copy_(inv_softplus(c * self.scale))

    def _unconstrained_sd(self, batch: PreparedBatch) -> torch.Tensor:
        """The marginal standard deviations of :meth:`get_posterior`."""
        return self.get_posterior(batch).stddev


class AutoDiagonalNormal(_AutoGaussian):
    """Diagonal Normal over the flat unconstrained latent vector (Pyro's ``AutoDiagonalNormal``).

    The same family as :class:`AutoNormalGuide` (mean-field), packed into one vector:
    ``u ~ Normal(loc, scale)``, ``z = biject_to(support)(u)`` per site.

    Parameters
    ----------
    model : MonadicProgram
        The model.
    observed_names : sequence of str, optional
        Sites left out of the guide.
    init_loc_fn : callable or str
        Init strategy (default :func:`init_to_median`).
    init_scale : float
        Initial scale of every coordinate (default 0.1).

    Raises
    ------
    GuideError
        On a non-positive ``init_scale``, or as :class:`AutoContinuous` (local latents).
    """

    def __init__(
        self,
        model: MonadicProgram,
        observed_names: Sequence[str] | None = None,
        init_loc_fn: InitFn | str = init_to_median,
        init_scale: float = 0.1,
    ) -> None:
        super().__init__(model, observed_names, init_loc_fn, init_scale, 0)

    def _set_covariance(self, cov: torch.Tensor) -> None:
        """The marginal variances (the diagonal family drops correlations)."""
        self.scale_raw.copy_(inv_softplus(cov.diagonal(dim1=-2, dim2=-1).sqrt()))

    def get_transform(self, batch: Batch = None) -> Transform:
        """``u = loc + scale * eps``."""
        return AffineTransform(self.loc, self.scale, event_dim=1)

    def get_posterior(self, batch: Batch = None) -> Distribution:
        """``Independent(Normal(loc, scale), 1)``, event shape ``(latent_dim,)``."""
        return Independent(Normal(self.loc, self.scale), 1)


class AutoMultivariateNormal(_AutoGaussian):
    """Full-rank multivariate Normal over the flat unconstrained latents
    (Pyro's ``AutoMultivariateNormal``).

    ``u ~ MultivariateNormal(loc, scale_tril)`` with ``scale_tril = diag(scale) @ T``,
    ``T`` unit lower triangular (parameter ``scale_tril_raw``, strict lower part used):
    the scales and the correlations are learned separately, as in the anchors.

    Parameters
    ----------
    model : MonadicProgram
        The model.
    observed_names : sequence of str, optional
        Sites left out of the guide.
    init_loc_fn : callable or str
        Init strategy (default :func:`init_to_median`).
    init_scale : float
        Initial scale of every coordinate (default 0.1); the initial correlations are 0.
    batch_ndim : int
        See :class:`AutoBatchedMultivariateNormal`; ``0`` here.

    Raises
    ------
    GuideError
        On a non-positive ``init_scale``, or as :class:`AutoContinuous` (local latents).
    """

    def __init__(
        self,
        model: MonadicProgram,
        observed_names: Sequence[str] | None = None,
        init_loc_fn: InitFn | str = init_to_median,
        init_scale: float = 0.1,
        batch_ndim: int = 0,
    ) -> None:
        super().__init__(model, observed_names, init_loc_fn, init_scale, batch_ndim)
        d = self.latent_dim
        self.scale_tril_raw = nn.Parameter(self.loc.new_zeros(self.batch_shape + (d, d)))

    @property
    def scale_tril(self) -> torch.Tensor:
        """Lower Cholesky factor of the covariance, shape ``batch_shape + (D, D)``."""
        d = self.latent_dim
        unit = self.scale_tril_raw.tril(-1) + torch.eye(d, dtype=self.loc.dtype, device=self.loc.device)
        return self.scale.unsqueeze(-1) * unit

    @torch.no_grad()
    def set_scale_tril(self, scale_tril: torch.Tensor) -> None:
        """Set the parameters so that :attr:`scale_tril` equals ``scale_tril``.

        Raises
        ------
        GuideError
            If the shape is not ``batch_shape + (D, D)`` or the diagonal is not positive.
        """
        want = self.batch_shape + (self.latent_dim, self.latent_dim)
        if tuple(scale_tril.shape) != tuple(want):
            raise GuideError(f"scale_tril has shape {tuple(scale_tril.shape)}, expected {tuple(want)}")
        diag = scale_tril.diagonal(dim1=-2, dim2=-1)
        if not bool((diag > 0).all()):
            raise GuideError("scale_tril must have a positive diagonal")
        self.scale_raw.copy_(inv_softplus(diag))
        self.scale_tril_raw.copy_(scale_tril.tril(-1) / diag.unsqueeze(-1))

    def _set_covariance(self, cov: torch.Tensor) -> None:
        """Exact: ``scale_tril = cholesky(cov)``."""
        self.set_scale_tril(torch.linalg.cholesky(cov))

    def _whitening_map(self, cov: torch.Tensor) -> torch.Tensor:
        """The Cholesky factor of ``cov`` (the family is closed under lower-triangular maps);
        its marginal sds above 2,000 dimensions."""
        if self.latent_dim > 2000:
            return super()._whitening_map(cov)
        return torch.linalg.cholesky(cov)

    @torch.no_grad()
    def _fold_whitening(self, shift: torch.Tensor, c: torch.Tensor) -> None:
        """``loc = shift + C loc_w`` and ``scale_tril = C scale_tril_w`` (lower triangular
        times lower triangular), exact."""
        if c.shape == self.loc.shape:
            c = torch.diag_embed(c)
        tril = c @ self.scale_tril
        self.loc.copy_(shift + (c @ self.loc.unsqueeze(-1)).squeeze(-1))
        self.set_scale_tril(tril)

    def get_transform(self, batch: Batch = None) -> Transform:
        """``u = loc + scale_tril @ eps``."""
        return LowerCholeskyAffine(self.loc, self.scale_tril)

    def get_posterior(self, batch: Batch = None) -> Distribution:
        """``MultivariateNormal(loc, scale_tril=scale_tril)``."""
        return MultivariateNormal(self.loc, scale_tril=self.scale_tril)


class AutoLowRankMultivariateNormal(_AutoGaussian):
    """Low-rank plus diagonal multivariate Normal over the flat unconstrained latents
    (Pyro's ``AutoLowRankMultivariateNormal``).

    ``u ~ LowRankMultivariateNormal(loc, cov_factor = scale * W, cov_diag = scale^2)``, so
    ``Cov = diag(scale) (W W^T + I) diag(scale)`` with ``W`` of shape ``(D, rank)``: ``O(D rank)``
    parameters and cost instead of ``O(D^2)``.

    Parameters
    ----------
    model : MonadicProgram
        The model.
    observed_names : sequence of str, optional
        Sites left out of the guide.
    init_loc_fn : callable or str
        Init strategy (default :func:`init_to_median`).
    init_scale : float
        Initial ``scale`` (default 0.1).
    rank : int, optional
        Rank of ``W``; default ``round(sqrt(D))`` (at least 1).
    batch_ndim : int
        See :class:`AutoBatchedLowRankMultivariateNormal`; ``0`` here.

    Raises
    ------
    GuideError
        If ``rank`` is not an integer in ``[1, D]``, on a non-positive ``init_scale``, or
        as :class:`AutoContinuous`.
    """

    def __init__(
        self,
        model: MonadicProgram,
        observed_names: Sequence[str] | None = None,
        init_loc_fn: InitFn | str = init_to_median,
        init_scale: float = 0.1,
        rank: int | None = None,
        batch_ndim: int = 0,
    ) -> None:
        super().__init__(model, observed_names, init_loc_fn, init_scale, batch_ndim)
        d = self.latent_dim
        if rank is None:
            rank = max(1, round(math.sqrt(d)))
        if int(rank) != rank or not 1 <= rank <= d:
            raise GuideError(f"rank must be an integer in [1, latent_dim={d}], got {rank!r}")
        self.rank = int(rank)
        # W starts small and random: W = 0 is a saddle point (the gradient in W is linear in W)
        w = torch.randn(self.batch_shape + (d, self.rank), dtype=self.loc.dtype, device=self.loc.device)
        w = w * (0.5 / math.sqrt(self.rank))
        self.cov_factor = nn.Parameter(w)

    def _set_covariance(self, cov: torch.Tensor) -> None:
        """Probabilistic-PCA fit (Tipping & Bishop 1999) to the correlation matrix ``R`` of
        ``cov``: with eigenpairs ``(lambda, v)`` of ``R``, ``a^2`` the mean of the
        ``D - rank`` smallest eigenvalues, ``W = V_k sqrt(lambda_k / a^2 - 1)`` and
        ``scale = a sqrt(diag cov)``, so ``Cov = diag(sd) (V_k (lambda_k - a^2) V_k^T + a^2 I) diag(sd)``."""
        sd = cov.diagonal(dim1=-2, dim2=-1).sqrt()
        corr = cov / (sd.unsqueeze(-1) * sd.unsqueeze(-2))
        evals, evecs = torch.linalg.eigh(corr)  # ascending
        d, k = self.latent_dim, self.rank
        rest = evals[..., : d - k].mean(-1, keepdim=True) if d > k else evals[..., :1]
        a2 = rest.clamp(1e-6, 1.0)
        top_vals, top_vecs = evals[..., d - k:], evecs[..., d - k:]
        w = top_vecs * (top_vals / a2 - 1).clamp_min(0.0).sqrt().unsqueeze(-2)
        # a zero column (eigenvalue <= a^2) would sit on the W = 0 saddle: start it small and random
        dead = w.norm(dim=-2, keepdim=True) < 1e-8
        self.cov_factor.copy_(torch.where(dead, 1e-3 * torch.randn_like(w), w))
        self.scale_raw.copy_(inv_softplus(a2.sqrt() * sd))

    def get_posterior(self, batch: Batch = None) -> Distribution:
        """``LowRankMultivariateNormal(loc, scale * W, scale^2)``."""
        scale = self.scale
        return LowRankMultivariateNormal(self.loc, self.cov_factor * scale.unsqueeze(-1), scale.square())


class AutoBatchedMultivariateNormal(AutoMultivariateNormal):
    """Block-diagonal :class:`AutoMultivariateNormal`: an independent full-rank Normal
    per index of the leading ``batch_ndim`` dimensions (NumPyro's
    ``AutoBatchedMultivariateNormal``).

    Every latent site must share those leading (plate) dimensions, for instance
    ``(N, K)``-shaped sites in one plate of size ``N``; the covariance is then ``N``
    blocks of ``(K_total, K_total)``.

    Parameters
    ----------
    model, observed_names, init_loc_fn, init_scale
        As :class:`AutoMultivariateNormal`.
    batch_ndim : int
        Number of leading dimensions that index blocks (default 1).

    Raises
    ------
    GuideError
        If the sites do not share their leading ``batch_ndim`` dimensions.
    """

    def __init__(
        self,
        model: MonadicProgram,
        observed_names: Sequence[str] | None = None,
        init_loc_fn: InitFn | str = init_to_median,
        init_scale: float = 0.1,
        batch_ndim: int = 1,
    ) -> None:
        super().__init__(model, observed_names, init_loc_fn, init_scale, batch_ndim)


class AutoBatchedLowRankMultivariateNormal(AutoLowRankMultivariateNormal):
    """Block-diagonal :class:`AutoLowRankMultivariateNormal` over the leading
    ``batch_ndim`` dimensions (NumPyro's ``AutoBatchedLowRankMultivariateNormal``).

    Parameters
    ----------
    model, observed_names, init_loc_fn, init_scale, rank
        As :class:`AutoLowRankMultivariateNormal` (``rank`` per block).
    batch_ndim : int
        Number of leading dimensions that index blocks (default 1).

    Raises
    ------
    GuideError
        If the sites do not share their leading ``batch_ndim`` dimensions, or on a bad ``rank``.
    """

    def __init__(
        self,
        model: MonadicProgram,
        observed_names: Sequence[str] | None = None,
        init_loc_fn: InitFn | str = init_to_median,
        init_scale: float = 0.1,
        rank: int | None = None,
        batch_ndim: int = 1,
    ) -> None:
        super().__init__(model, observed_names, init_loc_fn, init_scale, rank, batch_ndim)
