"""``AutoStructured``: per-site conditionals plus dependencies on earlier sites (Pyro's ``AutoStructured``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from ..errors import GuideError
from ..program import MonadicProgram
from .continuous import AutoContinuous
from .guide import Batch, LogProbTerms, Sites
from .initialization import InitFn, check_init_scale, init_to_median
from .registry import LatentSite
from .transforms import inv_softplus

__all__ = ["AutoStructured"]

ConditionalFactory = Callable[[LatentSite, torch.Tensor], nn.Module]
DependencyFactory = Callable[[LatentSite, LatentSite], nn.Module]


class _Delta(nn.Module):
    """A point in the site's unconstrained space (no density: contributes ``0`` to ``log q``)."""

    def __init__(self, loc: torch.Tensor, init_scale: float) -> None:
        super().__init__()
        self.loc = nn.Parameter(loc)

    def forward(self) -> None:
        return None


class _Normal(nn.Module):
    """Diagonal Normal over the site's flat unconstrained value."""

    def __init__(self, loc: torch.Tensor, init_scale: float) -> None:
        super().__init__()
        self.loc = nn.Parameter(loc)
        self.scale_raw = nn.Parameter(torch.full_like(loc, float(inv_softplus(init_scale))))

    def forward(self) -> Distribution:
        return Independent(Normal(self.loc, F.softplus(self.scale_raw)), 1)


class _MultivariateNormal(nn.Module):
    """Full-rank Normal over the site's flat unconstrained value (scale x unit lower Cholesky)."""

    def __init__(self, loc: torch.Tensor, init_scale: float) -> None:
        super().__init__()
        self.loc = nn.Parameter(loc)
        self.scale_raw = nn.Parameter(torch.full_like(loc, float(inv_softplus(init_scale))))
        self.scale_tril_raw = nn.Parameter(loc.new_zeros(loc.shape + loc.shape))

    def forward(self) -> Distribution:
        unit = self.scale_tril_raw.tril(-1) + torch.eye(self.loc.numel(), dtype=self.loc.dtype, device=self.loc.device)
        return MultivariateNormal(self.loc, scale_tril=F.softplus(self.scale_raw).unsqueeze(-1) * unit)


_CONDITIONALS: dict[str, type[nn.Module]] = {"delta": _Delta, "normal": _Normal, "mvn": _MultivariateNormal}


class AutoStructured(AutoContinuous):
    """Structured guide: a chosen conditional per site, plus dependencies on earlier sites
    (Pyro's ``AutoStructured``; the structured variational families of Hoffman & Blei
    2015 and Ambrogioni et al. 2021).

    Each latent site ``i`` (in declaration order) has a flat unconstrained value ``u_i``::

        u_i = v_i + sum_{j in deps(i)} f_ij(u_j),    v_i ~ c_i     (j earlier than i)

    then ``z_i = biject_to(support_i)(u_i)``. The shift is a translation, so
    ``log q(u_i | u_<i) = log c_i(u_i - shift_i)``; sampling and :meth:`log_prob` are both
    one pass (no iterative inverse). With ``"mvn"`` everywhere and ``"linear"``
    dependencies on all earlier sites, the family is a full-rank Gaussian.

    Parameters
    ----------
    model : MonadicProgram
        The model.
    conditionals : str or dict, optional
        ``c_i`` per site: ``"delta"`` (a point in unconstrained space: no density, so
        with every site a delta the ELBO is the unconstrained log joint, as
        :class:`AutoLaplaceApproximation` fits), ``"normal"`` (diagonal), ``"mvn"``
        (full-rank within the site), or a factory ``f(site, init_loc) -> nn.Module``
        whose ``forward()`` returns a reparameterised ``Distribution`` with
        ``batch_shape == ()`` and ``event_shape == (site.numel,)``. A string applies to
        every site; a dict gives some sites, the rest get ``"normal"``. Default ``"mvn"``.
    dependencies : str, dict or None, optional
        ``"linear"`` (default): every site depends linearly on every earlier site.
        ``None`` or ``{}``: no dependencies. A dict ``{downstream: {upstream: dep}}``
        with ``dep`` ``"linear"`` (a bias-free ``nn.Linear`` from ``u_j`` to ``u_i``,
        initialised at zero) or a factory ``f(upstream_site, downstream_site) -> nn.Module``
        mapping ``(..., upstream.numel)`` to ``(..., downstream.numel)``.
    observed_names : sequence of str, optional
        Sites left out of the guide.
    init_loc_fn : callable or str
        Init strategy for the locations (default :func:`init_to_median`).
    init_scale : float
        Initial scale of ``"normal"`` and ``"mvn"`` conditionals (default 0.1).

    Raises
    ------
    GuideError
        If a dict names an unknown site, a site depends on itself or on a later site, a
        conditional or dependency is not one of the names above nor callable, a custom
        conditional's distribution has the wrong shape or no ``rsample``, ``init_scale``
        is not positive, or as :class:`AutoContinuous` (local latents).

    Notes
    -----
    :meth:`median` is exact when every conditional is built in and every dependency
    ``"linear"`` (the marginals are then Gaussian, median = mean); otherwise it and
    :meth:`quantiles` are estimated from 1,000 draws. :meth:`get_posterior` is not
    defined (the joint is not one ``torch.distributions`` object in general).
    """

    def __init__(
        self,
        model: MonadicProgram,
        conditionals: str | Mapping[str, str | ConditionalFactory] = "mvn",
        dependencies: str | Mapping[str, Mapping[str, str | DependencyFactory]] | None = "linear",
        observed_names: Sequence[str] | None = None,
        init_loc_fn: InitFn | str = init_to_median,
        init_scale: float = 0.1,
    ) -> None:
        init_scale = check_init_scale(init_scale)
        super().__init__(model, observed_names, init_loc_fn)
        names = self.registry.names
        conds = self._check_conditionals(conditionals, names)
        deps = self._check_dependencies(dependencies, names)
        loc = self._init_loc()
        self.conditionals = nn.ModuleDict()
        for s in self.registry:
            init = loc[s.offset: s.offset + s.numel].clone()
            kind = conds[s.name]
            module = _CONDITIONALS[kind](init, init_scale) if isinstance(kind, str) else kind(s, init)
            if not isinstance(module, nn.Module):
                raise GuideError(f"conditional factory for site {s.name!r} must return an nn.Module, got {module!r}")
            self.conditionals[s.name] = module
            if not isinstance(kind, str):
                self._check_custom(s, module)
        self.dependencies = nn.ModuleDict()
        for down, ups in deps.items():
            inner = nn.ModuleDict()
            for up, dep in ups.items():
                s_up, s_down = self.registry[up], self.registry[down]
                if dep == "linear":
                    layer = nn.Linear(s_up.numel, s_down.numel, bias=False, dtype=loc.dtype)
                    nn.init.zeros_(layer.weight)
                else:
                    layer = dep(s_up, s_down)
                inner[up] = layer
            self.dependencies[down] = inner
        self._closed_form = all(isinstance(conds[n], str) for n in names) and all(
            d == "linear" for ups in deps.values() for d in ups.values())

    # ------------------------------------------------------------------ argument checks
    @staticmethod
    def _check_conditionals(conditionals, names: list[str]) -> dict[str, str | ConditionalFactory]:
        if isinstance(conditionals, str):
            conditionals = dict.fromkeys(names, conditionals)
        unknown = sorted(set(conditionals) - set(names))
        if unknown:
            raise GuideError(f"AutoStructured: conditionals name unknown latent sites {unknown}; latent sites: {names}")
        out = {n: conditionals.get(n, "normal") for n in names}
        for n, c in out.items():
            if not (callable(c) or c in _CONDITIONALS):
                raise GuideError(
                    f"AutoStructured: conditional of site {n!r} must be one of {sorted(_CONDITIONALS)} or a "
                    f"callable, got {c!r}")
        return out

    @staticmethod
    def _check_dependencies(dependencies, names: list[str]) -> dict[str, dict[str, str | DependencyFactory]]:
        if dependencies is None:
            return {}
        if isinstance(dependencies, str):
            if dependencies != "linear":
                raise GuideError(f"AutoStructured: dependencies must be 'linear', a dict or None, got {dependencies!r}")
            return {d: dict.fromkeys(names[:i], "linear") for i, d in enumerate(names) if i > 0}
        order = {n: i for i, n in enumerate(names)}
        out: dict[str, dict[str, str | DependencyFactory]] = {}
        for down, ups in dependencies.items():
            if down not in order:
                raise GuideError(
                    f"AutoStructured: dependencies name unknown latent site {down!r}; latent sites: {names}")
            for up, dep in ups.items():
                if up not in order:
                    raise GuideError(
                        f"AutoStructured: site {down!r} depends on unknown latent site {up!r}; latent sites: {names}")
                if order[up] >= order[down]:
                    raise GuideError(
                        f"AutoStructured: site {down!r} may only depend on earlier sites, but {up!r} is "
                        f"{'itself' if up == down else 'declared after it'} (order: {names})")
                if not (callable(dep) or dep == "linear"):
                    raise GuideError(
                        f"AutoStructured: dependency of {down!r} on {up!r} must be 'linear' or a callable, got {dep!r}")
            if ups:
                out[down] = dict(sorted(ups.items(), key=lambda kv: order[kv[0]]))
        return dict(sorted(out.items(), key=lambda kv: order[kv[0]]))

    @staticmethod
    def _check_custom(site: LatentSite, module: nn.Module) -> None:
        with torch.no_grad():
            d = module()
        if not isinstance(d, Distribution) or not d.has_rsample:
            raise GuideError(
                f"conditional of site {site.name!r} must return a reparameterised Distribution, got {d!r}")
        if tuple(d.batch_shape) != () or tuple(d.event_shape) != (site.numel,):
            raise GuideError(
                f"conditional of site {site.name!r} must have batch_shape () and event_shape ({site.numel},) "
                f"(the site's flat unconstrained value); got batch_shape {tuple(d.batch_shape)}, "
                f"event_shape {tuple(d.event_shape)}")

    # ------------------------------------------------------------------ the family
    def _shift(self, name: str, parts: Mapping[str, torch.Tensor]) -> torch.Tensor | float:
        """``sum_j f_ij(u_j)`` over the upstream sites of ``name``."""
        total: torch.Tensor | float = 0.0
        if name in self.dependencies:
            for up, f in self.dependencies[name].items():
                total = total + f(parts[up])
        return total

    def get_posterior(self, batch: Batch = None) -> Distribution:
        """Not defined for this guide (see Notes)."""
        raise NotImplementedError("AutoStructured has no single get_posterior; use rsample / sample_posterior")

    def rsample_and_log_prob_terms(
        self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = (),
    ) -> tuple[Sites, LogProbTerms]:
        batch = self._prepare(batch)
        ss = torch.Size(sample_shape)
        parts: dict[str, torch.Tensor] = {}
        log_q = 0.0
        for s in self.registry:
            module = self.conditionals[s.name]
            c = module()
            if c is None:  # delta
                v = module.loc.expand(ss + module.loc.shape)
            else:
                v = c.rsample(ss)
                log_q = log_q + c.log_prob(v)
            parts[s.name] = v + self._shift(s.name, parts)
        values, log_det = self._constrain(torch.cat(list(parts.values()), -1), ss, batch)
        return values, {tuple(self.registry.names): log_q - log_det}

    def log_prob_terms(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> LogProbTerms:
        batch = self._prepare(batch)
        u, log_det = self._unconstrained_and_log_det(sites, batch)
        parts = {s.name: u[..., s.offset: s.offset + s.numel] for s in self.registry}
        log_q = 0.0
        for s in self.registry:
            c = self.conditionals[s.name]()
            if c is not None:
                log_q = log_q + c.log_prob(parts[s.name] - self._shift(s.name, parts))
        return {tuple(self.registry.names): log_q - log_det}

    def _unconstrained_median(self) -> torch.Tensor | None:
        """Exact for built-in conditionals and linear dependencies (jointly Gaussian)."""
        if not self._closed_form:
            return None
        parts: dict[str, torch.Tensor] = {}
        for s in self.registry:
            parts[s.name] = self.conditionals[s.name].loc + self._shift(s.name, parts)
        return torch.cat(list(parts.values()), -1)

    def extra_repr(self) -> str:
        kinds = {n: type(m).__name__.strip("_") for n, m in self.conditionals.items()}
        deps = {d: list(u) for d, u in self.dependencies.items()}
        return f"conditionals={kinds}, dependencies={deps}"

