"""Composing guides: ``AutoGuideList`` (guides over disjoint site sets) and
``AutoCallable`` (a plain callable as a guide)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from ..errors import GuideError
from ..program import MonadicProgram, PreparedBatch
from ..shapes import reduce_to_sample
from ..spec import SpecError, check_arguments, from_spec, object_path
from .guide import Batch, Guide, LogProbTerms, Sites, check_guide

__all__ = ["AutoGuideList", "AutoCallable", "guide_from_spec"]


def guide_from_spec(spec: Mapping[str, Any], model: MonadicProgram) -> Guide:
    """Rebuild a guide from ``{"class_path", "init_args"}`` (as ``init_spec`` records it,
    without ``model``), passing ``model`` when the class takes one.

    Raises
    ------
    SpecError
        If the class takes no argument of a name in ``init_args`` (nothing is built).
    GuideError
        If the result is not a :class:`Guide`.
    """
    if not isinstance(spec.get("class_path"), str):
        raise SpecError(
            f"guide: {dict(spec)!r} is not a guide spec; expected {{'class_path': ..., 'init_args': {{...}}}} "
            "(an argument the guide class does not take ends up here from the command line)"
        )
    cls = from_spec({"callable": spec["class_path"]})
    takes_model = "model" in inspect.signature(cls).parameters
    check_arguments(cls, spec.get("init_args", {}), f"guide {spec['class_path']}", skip=("model",))
    raw = getattr(cls, "spec_raw_args", ())  # arguments the class builds itself (with the model)
    args = {k: v if k in raw else from_spec(v) for k, v in spec.get("init_args", {}).items()}
    guide = cls(model, **args) if takes_model else cls(**args)
    if not isinstance(guide, Guide):
        raise GuideError(f"guide: {spec['class_path']} built a {type(guide).__name__}, not a Guide")
    return guide


class AutoGuideList(Guide):
    """A guide made of guides over disjoint sets of latent sites (Pyro's ``AutoGuideList``).

    ``q(z) = prod_k q_k(z_k)``: samples are the union of the parts' samples and
    ``log q`` the sum of theirs. Build each part on the same model, leaving out the sites
    other parts cover with ``observed_names``::

        guide = AutoGuideList(model)
        guide.append(AutoMultivariateNormal(model, observed_names=["theta"]))
        guide.append(AutoNormalGuide(model, observed_names=["mu", "tau"]))

    Parts see the batch with the other parts' values added as conditioned latent sites:
    the values drawn so far when sampling (a later part's support may depend on an
    earlier part's site: append parts in model order), and the other parts' medians where
    a part conditions on them (``AutoLaplaceApproximation``'s Hessian).

    Parameters
    ----------
    model : MonadicProgram
        The model.
    guides : iterable of Guide or spec dicts, optional
        Initial parts (each as :meth:`append`).

    Raises
    ------
    GuideError
        From :meth:`append`.
    """

    spec_raw_args = ("guides",)

    def __init__(self, model: MonadicProgram, guides: Iterable[Guide | Mapping[str, Any]] = ()) -> None:
        super().__init__(model)
        self.parts = nn.ModuleList()
        for g in guides:
            self.append(guide_from_spec(g, model) if isinstance(g, Mapping) else g)

    def append(self, guide: Guide | Callable[[Batch], Mapping[str, Distribution]]) -> AutoGuideList:
        """Add a part. A plain callable ``batch -> {site: Distribution}`` is wrapped in an
        :class:`AutoCallable` covering the sites it returns (as Pyro's ``append``).

        Raises
        ------
        GuideError
            If the part was built for a different model, covers a site that is not a
            latent site of the model, or covers a site another part already covers.
        """
        if not isinstance(guide, Guide):
            if not callable(guide):
                raise GuideError(f"AutoGuideList.append: expected a Guide or a callable, got {type(guide).__name__}")
            guide = AutoCallable.wrap(self.model, guide)
        check_guide(self.model, guide, "AutoGuideList")
        taken = {n: type(p).__name__ for p in self.parts for n in p.latent_names}
        overlap = [n for n in guide.latent_names if n in taken]
        if overlap:
            raise GuideError(
                f"AutoGuideList: part {type(guide).__name__} covers {overlap}, already covered by "
                f"{sorted({taken[n] for n in overlap})}; leave them out of one part with observed_names=..."
            )
        self.parts.append(guide)
        return self

    add = append

    def __getitem__(self, i: int) -> Guide:
        return self.parts[i]

    def __len__(self) -> int:
        return len(self.parts)

    @property
    def latent_names(self) -> list[str]:
        return [n for p in self.parts for n in p.latent_names]

    @property
    def has_dynamic_support(self) -> bool:
        """Whether a part has a latent site whose support depends on other sites."""
        return any(_dynamic(p) for p in self.parts)

    def init_spec(self, exclude: tuple[str, ...] = (), on_error=None) -> dict[str, Any]:
        """Spec with the parts' specs (each without ``model``), so ``append`` calls are kept."""
        parts = [p.init_spec(("model",), on_error) for p in self.parts]
        args = {} if "guides" in exclude else {"guides": parts}
        return {"class_path": object_path(type(self)), "init_args": args}

    def rsample_and_log_prob_terms(
        self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = (),
    ) -> tuple[Sites, LogProbTerms]:
        batch = self.model.prepare(batch, subsample=False)
        values: Sites = {}
        terms: LogProbTerms = {}
        for p in self.parts:
            z, t = p.rsample_and_log_prob_terms(_augment(batch, values), sample_shape)
            values.update(z)
            terms.update(t)
        return values, terms

    def rsample(self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = ()) -> Sites:
        return self.rsample_and_log_prob_terms(batch, sample_shape)[0]

    def log_prob_terms(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> LogProbTerms:
        batch = self.model.prepare(batch, subsample=False)
        terms: LogProbTerms = {}
        for p in self.parts:
            own = {n: sites[n] for n in p.latent_names}
            terms.update(p.log_prob_terms(_augment(batch, {k: v for k, v in sites.items() if k not in own}), own))
        return terms

    def log_prob(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.as_tensor(sum(self.log_prob_terms(batch, sites).values()))

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return all(p.has_rsample for p in self.parts)

    def enumerated_log_probs(self, batch: Batch = None) -> dict[str, torch.Tensor]:
        """The parts' enumerated sites (see :meth:`Guide.enumerated_log_probs`)."""
        out: dict[str, torch.Tensor] = {}
        for p in self.parts:
            out.update(p.enumerated_log_probs(batch))
        return out

    def site_posteriors(self, batch: Batch = None) -> dict[str, Distribution] | None:
        """The parts' per-site distributions, when every part gives them."""
        out: dict[str, Distribution] = {}
        for p in self.parts:
            d = p.site_posteriors(batch)
            if d is None:
                return None
            out.update(d)
        return out

    @torch.no_grad()
    def draws(self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = ()) -> Sites:
        """The parts' posterior draws: a part with supports that move with other sites
        draws given the values drawn before it; a part that conditions on the other
        sites (a Laplace approximation) given their medians."""
        batch = self.model.prepare(batch, subsample=False)
        out: Sites = {}
        medians: Sites | None = None
        for p in self.parts:
            if getattr(p, "conditions_on_other_sites", False):
                medians = medians if medians is not None else self.latent_median(batch)
                context = {k: v for k, v in medians.items() if k not in p.latent_names}
            else:
                context = out
            out.update(p.draws(_augment(batch, context), sample_shape))
        return out

    @torch.no_grad()
    def latent_median(self, batch: Batch = None, num_samples: int = 1000) -> Sites:
        """The parts' medians; for parts with supports that move with other sites, the
        median of the joint draws."""
        batch = self.model.prepare(batch, subsample=False)
        joint = Guide.latent_median(self, batch, num_samples) if self.has_dynamic_support else {}
        out: Sites = {}
        for p in self.parts:
            if _dynamic(p):
                out.update({n: joint[n] for n in p.latent_names})
            else:
                out.update(p.latent_median(_augment(batch, out), num_samples))
        return out

    @torch.no_grad()
    def latent_quantiles(self, q: torch.Tensor, batch: Batch = None, num_samples: int = 1000) -> Sites:
        """The parts' quantiles (each given the other parts' medians); for parts with
        supports that move with other sites, quantiles of the joint draws."""
        batch = self.model.prepare(batch, subsample=False)
        joint = Guide.latent_quantiles(self, q, batch, num_samples) if self.has_dynamic_support else {}
        medians = self.latent_median(batch, num_samples)
        out: Sites = {}
        for p in self.parts:
            if _dynamic(p):
                out.update({n: joint[n] for n in p.latent_names})
            else:
                context = {k: v for k, v in medians.items() if k not in p.latent_names}
                out.update(p.latent_quantiles(q, _augment(batch, context), num_samples))
        return out


def _augment(batch: PreparedBatch, values: Mapping[str, torch.Tensor]) -> PreparedBatch:
    """The prepared batch with latent values added (as conditioned sites)."""
    if not values:
        return batch
    out = PreparedBatch(batch)
    out.update(values)
    return out


def _dynamic(part: Guide) -> bool:
    if isinstance(part, AutoGuideList):
        return part.has_dynamic_support
    registry = getattr(part, "registry", None)
    return bool(getattr(registry, "has_dynamic", False))


class AutoCallable(Guide):
    """A plain callable as a guide (Pyro's ``AutoCallable``).

    ``guide_fn(batch)`` returns ``{site: Distribution}`` over constrained values, one per
    latent site of the model (every latent site not in ``observed_names``), each with
    batch shape the site's (subsampled) batch shape and the site's event shape. Samples
    are drawn from them (``rsample`` where they have it), and ``log q`` is the sum of
    their log-densities (one term per site, which the objectives scale for subsampled
    plates). If ``guide_fn`` is an ``nn.Module`` its parameters are the guide's.

    Parameters
    ----------
    model : MonadicProgram
        The model.
    guide_fn : callable
        ``batch -> {site: Distribution}``.
    median : callable, optional
        ``batch -> {site: value}``; without it, :meth:`median` is estimated from draws.
    observed_names : sequence of str, optional
        Latent sites the batch supplies (or other guides cover), left out of the guide.

    Raises
    ------
    GuideError
        When ``guide_fn`` returns sites other than the guide's latent sites, or values
        that are not ``Distribution`` s.
    """

    def __init__(
        self,
        model: MonadicProgram,
        guide_fn: Callable[[Batch], Mapping[str, Distribution]],
        median: Callable[[Batch], Sites] | None = None,
        observed_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(model)
        if isinstance(guide_fn, nn.Module):
            self.guide_fn = guide_fn
        else:
            object.__setattr__(self, "guide_fn", guide_fn)
        self._median_fn = median
        skip = set(observed_names or ())
        self._names = [n for n in model.latent_names if n not in skip]
        self.has_rsample = True

    @classmethod
    def wrap(cls, model: MonadicProgram, guide_fn: Callable[[Batch], Mapping[str, Distribution]]) -> AutoCallable:
        """An ``AutoCallable`` covering the sites ``guide_fn`` returns for the empty batch
        (all latent sites when that call fails)."""
        try:
            with torch.no_grad():
                names = set(guide_fn(model.prepare({}, subsample=False)))
        except Exception:  # noqa: BLE001 - a guide_fn that needs data: it covers every site
            names = set(model.latent_names)
        return cls(model, guide_fn, observed_names=[n for n in model.latent_names if n not in names])

    @property
    def latent_names(self) -> list[str]:
        return list(self._names)

    def site_posteriors(self, batch: Batch = None) -> dict[str, Distribution]:
        """``guide_fn(batch)``, checked."""
        batch = self.model.prepare(batch, subsample=False)
        dists = dict(self.guide_fn(batch))
        if sorted(dists) != sorted(self._names):
            raise GuideError(
                f"AutoCallable: guide_fn returned sites {sorted(dists)}, expected the latent sites "
                f"{sorted(self._names)}"
            )
        for k, d in dists.items():
            if not isinstance(d, Distribution):
                raise GuideError(
                    f"AutoCallable: guide_fn returned a {type(d).__name__} for site {k!r}, not a Distribution"
                )
        return dists

    def rsample_and_log_prob_terms(
        self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = (),
    ) -> tuple[Sites, LogProbTerms]:
        ss = torch.Size(sample_shape)
        dists = self.site_posteriors(batch)
        self.has_rsample = all(d.has_rsample for d in dists.values())
        values, terms = {}, {}
        for k, d in dists.items():
            v = d.rsample(ss) if d.has_rsample else d.sample(ss)
            values[k] = v
            terms[(k,)] = reduce_to_sample(d.log_prob(v), ss)
        return values, terms

    def rsample(self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = ()) -> Sites:
        return self.rsample_and_log_prob_terms(batch, sample_shape)[0]

    def log_prob_terms(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> LogProbTerms:
        terms = {}
        for k, d in self.site_posteriors(batch).items():
            v = sites[k]
            ss = v.shape[: v.dim() - len(d.batch_shape) - len(d.event_shape)]
            terms[(k,)] = reduce_to_sample(d.log_prob(v), ss)
        return terms

    def log_prob(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.as_tensor(sum(self.log_prob_terms(batch, sites).values()))

    @torch.no_grad()
    def latent_median(self, batch: Batch = None, num_samples: int = 1000) -> Sites:
        """``median(batch)`` when given (each value broadcast to the site's trace layout);
        otherwise the elementwise median of ``num_samples`` draws."""
        if self._median_fn is None:
            return super().latent_median(batch, num_samples)
        shapes = {k: d.batch_shape + d.event_shape for k, d in self.site_posteriors(batch).items()}
        out = {}
        for k, v in self._median_fn(batch).items():
            v = torch.as_tensor(v)
            out[k] = v.reshape((1,) * (len(shapes[k]) - v.dim()) + v.shape) if k in shapes else v
        return out
