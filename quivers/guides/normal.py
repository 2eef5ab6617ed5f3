"""``AutoNormalGuide``: mean-field Normal in unconstrained space (Pyro's ``AutoNormal``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, Normal, TransformedDistribution

from ..program import MonadicProgram, PreparedBatch
from ..shapes import reduce_to_sample
from .auto import AutoGuide
from .guide import Batch, LogProbTerms, Sites
from .initialization import InitFn, check_init_scale, init_to_median
from .registry import LatentSite
from .site_params import SiteParameters
from .transforms import inv_softplus

__all__ = ["AutoNormalGuide", "AutoNormal"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class AutoNormalGuide(AutoGuide):
    """Mean-field Normal guide: one independent Normal per unconstrained coordinate.

    Each latent site ``z`` gets ``u ~ Normal(loc, scale)`` of shape
    ``biject_to(support).inverse_shape(batch_shape + event_shape)`` and
    ``z = biject_to(support)(u)``, so ``log q(z) = log N(u; loc, scale) - log|det J(u)|``
    (Kucukelbir et al. 2017, "Automatic Differentiation Variational Inference"; Pyro's
    ``AutoNormal``). All parameters are built in ``__init__``: ``locs[name]`` and
    ``scales[name]`` (a softplus-parameterised positive scale, so the raw parameter is
    ``scales_raw[name]``), each of shape ``site.unconstrained_shape``. Sites in
    subsampled plates keep full-size parameters; the batch's subsample indices select
    the slice. The other (global) sites' parameters are stored as one flat vector each
    (:class:`~quivers.guides.site_params.SiteParameters`), so a step draws, transforms
    and scores them in one operation each and the optimizer updates two tensors, not two
    per site; ``locs[name]`` is then a view, and ``state_dict()`` still holds one entry
    per site (``locs.<name>``, ``scales_raw.<name>``).

    Parameters
    ----------
    model : MonadicProgram
        The model.
    observed_names : sequence of str, optional
        Sites left out of the guide (see :class:`AutoGuide`).
    init_scale : float
        Initial scale of every unconstrained coordinate (default 0.1, as Pyro's).
    init_loc_fn : callable
        Init strategy for the locations (default :func:`init_to_median`).

    Raises
    ------
    GuideError
        If ``init_scale`` is not positive, or as :class:`AutoGuide`.
    """

    def __init__(
        self,
        model: MonadicProgram,
        observed_names: Sequence[str] | None = None,
        init_scale: float = 0.1,
        init_loc_fn: InitFn | str = init_to_median,
    ) -> None:
        init_scale = check_init_scale(init_scale)
        super().__init__(model, observed_names, init_loc_fn)
        self.init_scale = float(init_scale)
        raw = float(inv_softplus(self.init_scale))
        init = self._init_unconstrained()
        sites = list(self.registry)
        self.locs = SiteParameters(sites, init)
        self.scales_raw = SiteParameters(sites, {n: torch.full_like(u, raw) for n, u in init.items()})

    @torch.no_grad()
    def _set_moments(self, loc: torch.Tensor, cov: torch.Tensor) -> None:
        """Warm-start hook: per-site locations and the marginal scales of a flat Gaussian
        (``loc`` of shape ``(D,)``, ``cov`` ``(D, D)``, packed as :class:`LatentRegistry` does)."""
        sd = cov.diagonal().sqrt()
        for name, value in self.registry.unpack(loc).items():
            self.locs[name].copy_(value)
        for name, value in self.registry.unpack(sd).items():
            self.scales_raw[name].copy_(inv_softplus(value))

    def _loc_whitening(self, cov: torch.Tensor) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """Whitening hook (:class:`~quivers.infer.whitened.WhitenedAdam`): each site's
        ``loc`` moves in units of its marginal sds under ``cov`` (``(D, D)``, packed as
        :class:`LatentRegistry` does)."""
        sd = {n: v.reshape(self.locs[n].shape) for n, v in self.registry.unpack(cov.diagonal().sqrt()).items()}
        pairs = [(self.locs.local[n], sd[n]) for n in self.locs.local]
        if self.locs.flat is not None:
            pairs.append((self.locs.flat, self.locs.pack(sd)))
        return pairs

    def _loc_scale(self, site: LatentSite, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self._params_for(site, self.locs[site.name], batch)
        scale = F.softplus(self._params_for(site, self.scales_raw[site.name], batch))
        return loc, scale

    def rsample_and_log_prob_terms(
        self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = (),
    ) -> tuple[Sites, LogProbTerms]:
        batch = self._prepare(batch)
        ss = torch.Size(sample_shape)
        u: Sites = {}
        log_q: LogProbTerms = {}
        flat = self.locs.flat_names if self.locs.flat_applies(batch) else ()
        if flat:  # the global sites at once: one draw, one log-density
            loc, scale = self.locs.flat, F.softplus(self.scales_raw.flat)
            eps = torch.randn(ss + loc.shape, dtype=loc.dtype, device=loc.device)
            u.update(self.locs.split(loc + scale * eps))
            log_q[flat] = _log_normal(eps, scale, ss)
        for site in self.registry:
            if site.name in u:
                continue
            loc, scale = self._loc_scale(site, batch)
            eps = torch.randn(ss + loc.shape, dtype=loc.dtype, device=loc.device)
            u[site.name] = loc + scale * eps
            log_q[(site.name,)] = _log_normal(eps, scale, ss)
        values, log_det = self.registry.constrain(u, batch, ss)
        return values, _minus_log_det(log_q, log_det)

    def log_prob_terms(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> LogProbTerms:
        batch = self._prepare(batch)
        u, log_det = self.registry.unconstrain(sites, batch)
        terms: LogProbTerms = {}
        flat = self.locs.flat_names if self.locs.flat_applies(batch) else ()
        if flat:
            loc, scale = self.locs.flat, F.softplus(self.scales_raw.flat)
            eps = (self.locs.pack(u) - loc) / scale
            terms[flat] = _log_normal(eps, scale, eps.shape[:-1])
        for site in self.registry:
            if site.name in flat:
                continue
            loc, scale = self._loc_scale(site, batch)
            us = u[site.name]
            ss = us.shape[: us.dim() - loc.dim()]
            eps = (us - loc) / scale
            terms[(site.name,)] = _log_normal(eps, scale, ss)
        return _minus_log_det(terms, log_det)

    def _unconstrained_quantiles(self, z: torch.Tensor, batch: PreparedBatch) -> dict[str, torch.Tensor]:
        """``loc + scale * z`` per site (the Normal's quantiles)."""
        out = {}
        for site in self.registry:
            loc, scale = self._loc_scale(site, batch)
            out[site.name] = loc + scale * z.reshape((-1,) + (1,) * loc.dim())
        return out

    def site_posteriors(self, batch: Batch = None) -> dict[str, Distribution] | None:
        """Per-site ``q``: a real ``Normal`` (``Independent`` over event dims) at sites with
        real support, so analytic KLs apply; elsewhere the Normal pushed through the
        site's ``biject_to`` transform. ``None`` when a support depends on other sites
        (the transform then depends on their draws)."""
        if self.registry.has_dynamic:
            return None
        batch = self._prepare(batch)
        out: dict[str, Distribution] = {}
        for s in self.registry:
            loc, scale = self._loc_scale(s, batch)
            q: Distribution = Normal(loc, scale)
            if s.unconstrained_event_ndim:
                q = Independent(q, s.unconstrained_event_ndim)
            out[s.name] = q if s.is_real else TransformedDistribution(q, [s.transform])
        return out

    def scales(self, batch: Batch = None) -> dict[str, torch.Tensor]:
        """Positive scales per site (unconstrained space)."""
        batch = self._prepare(batch)
        return {s.name: self._loc_scale(s, batch)[1] for s in self.registry}


def _log_normal(eps: torch.Tensor, scale: torch.Tensor, ss: torch.Size) -> torch.Tensor:
    """``sum log N(loc + scale eps; loc, scale)`` over every coordinate, shape ``ss``
    (``eps``: ``ss + scale.shape``, broadcasting allowed)."""
    return reduce_to_sample(-0.5 * eps.square(), ss) - (scale.log().sum() + scale.numel() * _HALF_LOG_2PI)


def _minus_log_det(log_q: LogProbTerms, log_det: Mapping[str, torch.Tensor]) -> LogProbTerms:
    """``log q(z) = log q(u) - log|det J(u)|`` per term (sites with an identity transform
    have no ``log_det`` entry)."""
    out: LogProbTerms = {}
    for names, lq in log_q.items():
        for n in names:
            if n in log_det:
                lq = lq - log_det[n]
        out[names] = lq
    return out


AutoNormal = AutoNormalGuide
