"""``AutoContinuous``: guides over one flat unconstrained latent vector (Pyro's ``AutoContinuous``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch.distributions import Distribution, Independent, Normal, Transform, TransformedDistribution
from torch.distributions.transforms import AffineTransform, ComposeTransform

from ..errors import GuideError
from ..program import MonadicProgram, PreparedBatch
from .auto import AutoGuide
from .guide import Batch, LogProbTerms, Sites
from .initialization import InitFn, init_to_median
from .transforms import LowerCholeskyAffine, call_and_log_det

__all__ = ["AutoContinuous"]


class AutoContinuous(AutoGuide):
    """Base of guides whose posterior is one distribution over all latents, flattened.

    Every latent site is mapped to unconstrained space by ``biject_to(support)`` and the
    unconstrained values are concatenated, in declaration order, into one vector ``u`` of
    length :attr:`latent_dim` (per block when ``batch_ndim > 0``). A subclass defines
    the posterior over ``u`` (:meth:`get_posterior`, or :meth:`get_base_dist` and
    :meth:`get_transform`); this class does the packing, the constraining transforms and
    the Jacobian terms: ``log q(z) = log q(u) - log|det J(u)|`` (Kucukelbir et al. 2017,
    ADVI).

    Parameters
    ----------
    model : MonadicProgram
        The model.
    observed_names : sequence of str, optional
        Sites left out of the guide.
    init_loc_fn : callable or str
        Init strategy for the location (default :func:`init_to_median`).
    batch_ndim : int
        Leading batch dimensions kept as independent blocks (block-diagonal structure);
        every site must share them. ``0`` (default) is one block over all latents.

    Attributes
    ----------
    latent_dim : int
        Length of the flat unconstrained vector of one block.
    batch_shape : torch.Size
        Shape of the blocks (``()`` when ``batch_ndim == 0``).

    Raises
    ------
    GuideError
        If a latent site sits in a subsampled plate (a flat vector cannot follow the
        subsample; use ``AutoNormalGuide`` for local latents, or ``AutoGuideList``), if
        the sites do not share their leading ``batch_ndim`` dimensions, or as
        :class:`AutoGuide`.
    """

    def __init__(
        self,
        model: MonadicProgram,
        observed_names: Sequence[str] | None = None,
        init_loc_fn: InitFn | str = init_to_median,
        batch_ndim: int = 0,
    ) -> None:
        super().__init__(model, observed_names, init_loc_fn)
        self.registry.require_global(type(self).__name__)
        self.batch_shape = self.registry.block_shape(batch_ndim)
        self.batch_ndim = int(batch_ndim)
        self.latent_dim = self.registry.size // max(self.batch_shape.numel(), 1)
        self._whitening: tuple[torch.Tensor, torch.Tensor] | None = None  # set only inside whitened()

    # ------------------------------------------------------------------ to override
    def _init_loc(self) -> torch.Tensor:
        """Flat unconstrained initial location from ``init_loc_fn``, shape ``batch_shape + (latent_dim,)``."""
        return self.registry.pack(self._init_unconstrained(), batch_ndim=self.batch_ndim).detach().clone()

    def get_base_dist(self) -> Distribution:
        """The base distribution: standard Normal, batch shape :attr:`batch_shape`,
        event shape ``(latent_dim,)``."""
        p = next(self.parameters())
        zeros = torch.zeros(self.batch_shape + (self.latent_dim,), dtype=p.dtype, device=p.device)
        return Independent(Normal(zeros, torch.ones_like(zeros)), 1)

    def get_transform(self, batch: Batch = None) -> Transform:
        """The transform from :meth:`get_base_dist` to the flat unconstrained posterior.

        Raises
        ------
        NotImplementedError
            For guides whose posterior is not a transform of the base (low-rank).
        """
        raise NotImplementedError(f"{type(self).__name__} does not define get_transform")

    def get_posterior(self, batch: Batch = None) -> Distribution:
        """The posterior over the flat unconstrained vector: batch shape
        :attr:`batch_shape`, event shape ``(latent_dim,)``. The default pushes
        :meth:`get_base_dist` through :meth:`get_transform`."""
        return TransformedDistribution(self.get_base_dist(), [self.get_transform(batch)])

    def _unconstrained_median(self) -> torch.Tensor | None:
        """Median of the flat posterior where it is known in closed form (``None``: sample)."""
        return None

    def _search_start(self) -> torch.Tensor | None:
        """Where :func:`~quivers.guides.laplace_warm_start`'s MAP search starts: the flat
        median where it is known in closed form (``None``: the sampled median)."""
        return self._unconstrained_median()

    def _unconstrained_sd(self, batch: PreparedBatch) -> torch.Tensor | None:
        """Marginal standard deviations of a Gaussian flat posterior (``None``: not Gaussian)."""
        return None

    def _unconstrained_quantiles(self, z: torch.Tensor, batch: PreparedBatch) -> dict[str, torch.Tensor] | None:
        """Gaussian marginals ``loc + sd * z``; for other families only the median
        (``z = 0``), when :meth:`_unconstrained_median` knows it."""
        loc = self._unconstrained_median()
        if loc is None:
            return None
        if bool((z == 0).all()):
            flat = loc.expand((z.numel(),) + loc.shape)
        else:
            sd = self._unconstrained_sd(batch)
            if sd is None:
                return None
            flat = loc + sd * z.reshape((-1,) + (1,) * loc.dim())
        return self.registry.unpack(flat, self.batch_ndim)

    # ------------------------------------------------------------------ shared machinery
    def _block_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum a per-block log-density (``sample_shape + batch_shape``) over blocks."""
        return x.sum(tuple(range(-self.batch_ndim, 0))) if self.batch_ndim else x

    def _constrain(self, u: torch.Tensor, ss: torch.Size, batch: Batch = None) -> tuple[Sites, torch.Tensor]:
        """Unpack a flat draw and constrain each site: values and total ``log|det J|``."""
        values, log_det = self.registry.constrain(self.registry.unpack(u, self.batch_ndim), batch or {}, ss)
        return values, sum(log_det.values())

    def unconstrained(self, sites: Mapping[str, torch.Tensor], batch: Batch = None) -> torch.Tensor:
        """The flat unconstrained vector of constrained site values.

        Returns
        -------
        torch.Tensor
            Shape ``sample_shape + batch_shape + (latent_dim,)``.
        """
        return self._unconstrained_and_log_det(sites, batch)[0]

    def _unconstrained_and_log_det(self, sites: Mapping[str, torch.Tensor],
                                   batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.registry.names[0]
        x0, s0 = sites[first], self.registry[first]
        ss = x0.shape[: x0.dim() - len(s0.shape)]
        u, log_det = self.registry.unconstrain(sites, batch or {})
        return self.registry.pack(u, ss, self.batch_ndim), sum(log_det.values())

    @property
    def has_whitened_form(self) -> bool:
        """Whether :meth:`whitened` applies to this family (the Gaussian guides)."""
        return hasattr(self, "_fold_whitening")

    @contextmanager
    def whitened(self, shift: torch.Tensor, cov: torch.Tensor) -> Iterator[None]:
        """Train in whitened coordinates: inside the block the guide's parameters describe
        a distribution over ``w``, and its draws are ``u = shift + C w`` with ``C`` from
        :meth:`_whitening_map` (the Cholesky factor of ``cov`` for the full-rank family,
        its marginal sds for the others); on entry the guide over ``w`` is set to the
        member of its family nearest ``C^-1 cov C^-T`` (the standard Normal when ``C`` is
        exact), on exit (also on an error) the parameters are rewritten exactly so that
        the guide over ``u`` is unchanged (:meth:`_fold_whitening`). Every optimizer step
        then moves the guide in units of the posterior's scale in every direction, which
        is what ``lr`` means in :meth:`SVI.run <quivers.infer.SVI.run>`. Only the training
        draws (:meth:`rsample_and_log_prob_terms`, :meth:`log_prob_terms`) see the map:
        call nothing else on the guide inside the block.

        Parameters
        ----------
        shift : Tensor
            ``batch_shape + (D,)``, in this guide's flat coordinates.
        cov : Tensor
            ``batch_shape + (D, D)``, positive definite.

        Raises
        ------
        GuideError
            If the family has no whitened form (flows, the Laplace guide).
        """
        if not self.has_whitened_form:
            raise GuideError(f"{type(self).__name__} has no whitened form")
        ref = next(self.parameters())
        shift = shift.detach().to(ref)
        c = self._whitening_map(cov.detach().to(ref))
        if c.shape == shift.shape:
            cov_w = cov.to(ref) / (c.unsqueeze(-1) * c.unsqueeze(-2))
        else:
            cov_w = torch.eye(shift.shape[-1], dtype=ref.dtype, device=ref.device).expand(cov.shape)
        self._set_moments(torch.zeros_like(shift), cov_w)
        self._whitening = (shift, c)
        try:
            yield
        finally:
            self._whitening = None
            self._fold_whitening(shift, c)

    def _whitening_transform(self) -> Transform | None:
        if self._whitening is None:
            return None
        shift, c = self._whitening
        return AffineTransform(shift, c, event_dim=1) if c.shape == shift.shape else LowerCholeskyAffine(shift, c)

    def _flat_posterior(self, batch: Batch) -> Distribution:
        q = self.get_posterior(batch)
        w = self._whitening_transform()
        return q if w is None else TransformedDistribution(q, [w])

    def rsample_and_log_prob_terms(
        self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = (),
    ) -> tuple[Sites, LogProbTerms]:
        batch = self._prepare(batch)
        ss = torch.Size(sample_shape)
        u, log_q = self._flat_rsample(batch, ss)
        values, log_det = self._constrain(u, ss, batch)
        return values, {tuple(self.registry.names): self._block_sum(log_q) - log_det}

    def _flat_rsample(self, batch: Batch, ss: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised draw ``u`` of the flat posterior (whitening included) and
        ``log q(u)``: shapes ``ss + batch_shape + (latent_dim,)`` and ``ss + batch_shape``."""
        try:
            transform = self.get_transform(batch)
        except NotImplementedError:
            q = self._flat_posterior(batch)
            u = q.rsample(ss)
            return u, q.log_prob(u)
        # one pass, no inverse: log q(u) = log base(eps) - log|det dT/deps|
        w = self._whitening_transform()
        if w is not None:
            transform = ComposeTransform([transform, w])
        base = self.get_base_dist()
        eps = base.rsample(ss)
        u, log_det = call_and_log_det(transform, eps)
        return u, base.log_prob(eps) - log_det

    def log_prob_terms(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> LogProbTerms:
        batch = self._prepare(batch)
        u, log_det = self._unconstrained_and_log_det(sites, batch)
        return {tuple(self.registry.names): self._block_sum(self._flat_posterior(batch).log_prob(u)) - log_det}
