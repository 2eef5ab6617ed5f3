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
from ..program import MonadicProgram
from ..program.program import subsample_scale
from ..shapes import reduce_to_sample
from ..spec import from_spec, object_path
from .guide import Batch, Guide, Sites, _check_quantiles, check_guide

__all__ = ["AutoGuideList", "AutoCallable", "guide_from_spec"]


def guide_from_spec(spec: Mapping[str, Any], model: MonadicProgram) -> Guide:
    """Rebuild a guide from ``{"class_path", "init_args"}`` (as ``init_spec`` records it,
    without ``model``), passing ``model`` when the class takes one.

    Raises
    ------
    TypeError
        If the result is not a :class:`Guide`.
    """
    cls = from_spec({"callable": spec["class_path"]})
    raw = getattr(cls, "spec_raw_args", ())  # arguments the class builds itself (with the model)
    args = {k: v if k in raw else from_spec(v) for k, v in spec.get("init_args", {}).items()}
    guide = cls(model, **args) if "model" in inspect.signature(cls).parameters else cls(**args)
    if not isinstance(guide, Guide):
        raise TypeError(f"{spec['class_path']} built a {type(guide).__name__}, not a Guide")
    return guide


class AutoGuideList(Guide):
    """A guide made of guides over disjoint sets of latent sites (Pyro's ``AutoGuideList``).

    ``q(z) = prod_k q_k(z_k)``: samples are the union of the parts' samples and
    ``log q`` the sum of theirs. Build each part on the same model, leaving out the sites
    other parts cover with ``observed_names``::

        guide = AutoGuideList(model)
        guide.append(AutoMultivariateNormal(model, observed_names=["theta"]))
        guide.append(AutoNormalGuide(model, observed_names=["mu", "tau"]))

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
        super().__init__()
        object.__setattr__(self, "model", model)  # a reference, not a submodule
        self.parts = nn.ModuleList()
        for g in guides:
            self.append(guide_from_spec(g, model) if isinstance(g, Mapping) else g)

    def append(self, guide: Guide) -> AutoGuideList:
        """Add a part.

        Raises
        ------
        GuideError
            If the part was built for a different model, covers a site that is not a
            latent site of the model, or covers a site another part already covers.
        """
        if not isinstance(guide, Guide):
            raise GuideError(f"AutoGuideList.append: expected a Guide, got {type(guide).__name__}")
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

    def __getitem__(self, i: int) -> Guide:
        return self.parts[i]

    def __len__(self) -> int:
        return len(self.parts)

    @property
    def latent_names(self) -> list[str]:
        return [n for p in self.parts for n in p.latent_names]

    def init_spec(self, exclude: tuple[str, ...] = (), on_error=None) -> dict[str, Any]:
        """Spec with the parts' specs (each without ``model``), so ``append`` calls are kept."""
        parts = [p.init_spec(("model",), on_error) for p in self.parts]
        args = {} if "guides" in exclude else {"guides": parts}
        return {"class_path": object_path(type(self)), "init_args": args}

    def rsample_and_log_prob(
        self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = (),
    ) -> tuple[Sites, torch.Tensor]:
        values: Sites = {}
        total: torch.Tensor | float = 0.0
        for p in self.parts:
            z, lq = p.rsample_and_log_prob(batch, sample_shape)
            values.update(z)
            total = total + lq
        return values, torch.as_tensor(total)

    def rsample(self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = ()) -> Sites:
        return self.rsample_and_log_prob(batch, sample_shape)[0]

    def log_prob(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.as_tensor(sum(p.log_prob(batch, {n: sites[n] for n in p.latent_names}) for p in self.parts))

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return all(p.has_rsample for p in self.parts)

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
    def median(self, batch: Batch = None) -> Sites:
        """The parts' medians."""
        return {k: v for p in self.parts for k, v in p.median(batch).items()}

    @torch.no_grad()
    def quantiles(self, quantiles: Sequence[float] | torch.Tensor, batch: Batch = None) -> Sites:
        """The parts' marginal quantiles."""
        return {k: v for p in self.parts for k, v in p.quantiles(quantiles, batch).items()}


class AutoCallable(Guide):
    """A plain callable as a guide (Pyro's ``AutoCallable``).

    ``guide_fn(batch)`` returns ``{site: Distribution}`` over constrained values, one per
    latent site of the model (every latent site not in ``observed_names``), each with
    batch shape the site's (subsampled) batch shape and the site's event shape. Samples
    are drawn from them (``rsample`` where they have it), and ``log q`` is the sum of
    their log-densities, scaled for subsampled plates like the model's. If ``guide_fn``
    is an ``nn.Module`` its parameters are the guide's.

    Parameters
    ----------
    model : MonadicProgram
        The model.
    guide_fn : callable
        ``batch -> {site: Distribution}``.
    median : callable, optional
        ``batch -> {site: value}``; without it, :meth:`median` is estimated from draws.
    observed_names : sequence of str, optional
        Latent sites the batch supplies, left out of the guide.

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
        super().__init__()
        object.__setattr__(self, "model", model)
        if isinstance(guide_fn, nn.Module):
            self.guide_fn = guide_fn
        else:
            object.__setattr__(self, "guide_fn", guide_fn)
        self._median_fn = median
        skip = set(observed_names or ())
        self._names = [n for n in model.latent_names if n not in skip]
        self._plates = {info.name: info.plates for info in model.latent_sites()}
        self.has_rsample = True

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

    def _scale(self, name: str, batch: Mapping[str, Any]) -> float:
        return subsample_scale(self._plates[name], batch)

    def rsample_and_log_prob(
        self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = (),
    ) -> tuple[Sites, torch.Tensor]:
        batch = self.model.prepare(batch, subsample=False)
        ss = torch.Size(sample_shape)
        dists = self.site_posteriors(batch)
        self.has_rsample = all(d.has_rsample for d in dists.values())
        values, total = {}, torch.zeros(ss)
        for k, d in dists.items():
            v = d.rsample(ss) if d.has_rsample else d.sample(ss)
            values[k] = v
            total = total + reduce_to_sample(d.log_prob(v), ss) * self._scale(k, batch)
        return values, total

    def rsample(self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = ()) -> Sites:
        return self.rsample_and_log_prob(batch, sample_shape)[0]

    def log_prob(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> torch.Tensor:
        batch = self.model.prepare(batch, subsample=False)
        total: torch.Tensor | float = 0.0
        for k, d in self.site_posteriors(batch).items():
            v = sites[k]
            ss = v.shape[: v.dim() - len(d.batch_shape) - len(d.event_shape)]
            total = total + reduce_to_sample(d.log_prob(v), ss) * self._scale(k, batch)
        return torch.as_tensor(total)

    @torch.no_grad()
    def median(self, batch: Batch = None) -> Sites:
        """``median(batch)`` when given; otherwise the elementwise median of 1,000 draws."""
        if self._median_fn is not None:
            return dict(self._median_fn(batch))
        return super().median(batch)

    @torch.no_grad()
    def quantiles(self, quantiles: Sequence[float] | torch.Tensor, batch: Batch = None) -> Sites:
        """Estimated from 1,000 draws."""
        _check_quantiles(quantiles)
        return super().quantiles(quantiles, batch)
