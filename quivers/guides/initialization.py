"""Init strategies: where a guide's location starts, per latent site.

Each strategy is a callable ``init_fn(site) -> Tensor`` taking a
:class:`~quivers.guides.registry.LatentSite` and returning a constrained value of shape
``site.shape``. Semantics follow Pyro's ``pyro.infer.autoguide.initialization``.
Called with keyword arguments only (``init_to_median(num_samples=5)``), a strategy
returns a ``functools.partial``, which checkpoints can record by import path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import torch

from ..errors import GuideError
from .registry import LatentRegistry, LatentSite
from .site import tensor_like

__all__ = [
    "InitFn", "init_to_median", "init_to_mean", "init_to_feasible", "init_to_uniform",
    "init_to_value", "init_to_sample", "init_to_generated", "check_init_fn", "resolve_init_fn",
]

InitFn = Callable[[LatentSite], torch.Tensor]


def _finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all())


def _in_support(site: LatentSite, x: torch.Tensor) -> bool:
    return _finite(x) and bool(site.support.check(x).all())


def init_to_feasible(site: LatentSite | None = None) -> torch.Tensor | InitFn:
    """Initialise at ``biject_to(support)(0)``: a feasible point (Pyro's ``init_to_feasible``)."""
    if site is None:
        return init_to_feasible
    return site.transform(torch.zeros(site.unconstrained_shape, **tensor_like(site.prior)))


def init_to_uniform(site: LatentSite | None = None, radius: float = 2.0) -> torch.Tensor | InitFn:
    """Initialise at ``biject_to(support)(u)``, ``u ~ Uniform(-radius, radius)`` per
    unconstrained coordinate (Pyro's and Stan's default, radius 2)."""
    if site is None:
        return functools.partial(init_to_uniform, radius=radius)
    u = (torch.rand(site.unconstrained_shape, **tensor_like(site.prior)) * 2 - 1) * radius
    return site.transform(u)


def init_to_sample(site: LatentSite | None = None) -> torch.Tensor | InitFn:
    """Initialise at one draw from the prior; falls back to ``init_to_uniform`` for
    priors that cannot be sampled (``ImproperUniform``)."""
    if site is None:
        return init_to_sample
    try:
        x = site.prior.sample()
    except NotImplementedError:
        return init_to_uniform(site)
    return x if _in_support(site, x) else init_to_uniform(site)


def init_to_median(site: LatentSite | None = None, num_samples: int = 15) -> torch.Tensor | InitFn:
    """Initialise at the elementwise median of ``num_samples`` prior draws (Pyro's
    ``init_to_median``); falls back to ``init_to_feasible`` when the prior cannot be
    sampled or the median is not in the support."""
    if site is None:
        return functools.partial(init_to_median, num_samples=num_samples)
    try:
        draws = site.prior.sample((num_samples,))
    except NotImplementedError:
        return init_to_feasible(site)
    x = draws.median(dim=0).values
    return x if _in_support(site, x) else init_to_feasible(site)


def init_to_mean(site: LatentSite | None = None) -> torch.Tensor | InitFn:
    """Initialise at the prior mean (Pyro's ``init_to_mean``); falls back to
    ``init_to_median`` where the mean is undefined, infinite or outside the support."""
    if site is None:
        return init_to_mean
    try:
        x = site.prior.mean.expand(site.shape)
    except NotImplementedError:
        return init_to_median(site)
    return x if _in_support(site, x) else init_to_median(site)


def init_to_value(
    site: LatentSite | None = None,
    values: Mapping[str, torch.Tensor] | None = None,
    fallback: InitFn | None = None,
) -> torch.Tensor | InitFn:
    """Initialise named sites at given constrained values (Pyro's ``init_to_value``).

    Parameters
    ----------
    values : mapping of str to tensor
        Constrained values; each must broadcast to the site's shape and lie in its support.
    fallback : callable, optional
        Strategy for the other sites (default ``init_to_uniform``).

    Raises
    ------
    GuideError
        When a name is not a latent site of the model, or a value has the wrong shape or
        lies outside the support (raised while the guide is built).
    """
    if site is None:
        return functools.partial(init_to_value, values=values, fallback=fallback)
    values = values or {}
    if site.name in values:
        return LatentRegistry.check_value(site, values[site.name], "init_to_value")
    return (fallback or init_to_uniform)(site)


def _uniform() -> InitFn:
    return init_to_uniform


def init_to_generated(
    site: LatentSite | None = None, generate: Callable[[], InitFn] = _uniform,
) -> torch.Tensor | InitFn:
    """Initialise with a strategy that ``generate()`` returns afresh for each guide
    construction (Pyro's ``init_to_generated``): every guide built with it calls
    ``generate`` once and initialises all its sites with the result, so successive
    guides (restarts, an ensemble) can start from different, coherent points.

    Parameters
    ----------
    generate : callable
        ``generate() -> init strategy`` (for instance ``lambda: init_to_value(values=...)``).
    """
    if site is None:
        return functools.partial(init_to_generated, generate=generate)
    return generate()(site)


def resolve_init_fn(init_fn: InitFn) -> InitFn:
    """The strategy a guide construction uses: ``init_to_generated``'s ``generate()``
    called once, any other strategy as it is."""
    if getattr(init_fn, "func", None) is init_to_generated:
        return init_fn.keywords.get("generate", _uniform)()
    return init_fn


def check_init_fn(init_fn: InitFn, model) -> None:  # noqa: ANN001 - a MonadicProgram
    """Raise before anything is built if ``init_to_value`` (also as another strategy's
    fallback) names a site that is not a latent site of ``model``.

    Raises
    ------
    GuideError
        Naming the unknown sites and the model's latent sites.
    """
    while getattr(init_fn, "func", None) is init_to_value:
        values = init_fn.keywords.get("values") or {}
        unknown = [k for k in values if k not in model.latent_names]
        if unknown:
            raise GuideError(
                f"init_to_value: {unknown} are not latent sites of {type(model).__name__} "
                f"(its latent sites: {model.latent_names})"
            )
        init_fn = init_fn.keywords.get("fallback")
