"""Init strategies: where a guide's location starts, per latent site.

Each strategy is a callable ``init_fn(site) -> Tensor`` taking a
:class:`~quivers.guides.registry.LatentSite` and returning a constrained value of shape
``site.shape``. Semantics follow Pyro's ``pyro.infer.autoguide.initialization``.
Called with keyword arguments only (``init_to_median(num_samples=5)``), a strategy
returns a ``functools.partial``, which checkpoints can record by import path.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import torch
from torch.distributions import Distribution, Independent, Transform, TransformedDistribution

from ..errors import GuideError
from .registry import LatentRegistry, LatentSite
from .site import tensor_like
from .transforms import inv_softplus, is_increasing

__all__ = [
    "InitFn", "init_to_median", "init_to_mean", "init_to_feasible", "init_to_uniform",
    "init_to_value", "init_to_sample", "init_to_generated", "check_init_fn", "load_init_fn", "resolve_init_fn",
    "check_init_scale",
    "prior_median",
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
    """Initialise at the prior's elementwise median (Pyro's ``init_to_median``).

    The median is exact where the prior has an inverse CDF (``icdf(0.5)``, also through
    monotone transforms, as for ``LogNormal``); otherwise it is the median of
    ``num_samples`` prior draws, as in Pyro, drawn in slices so that memory stays near the
    site's own size (see :func:`prior_median`). Falls back to ``init_to_feasible`` when
    the prior cannot be sampled or the median is not in the support.
    """
    if site is None:
        return functools.partial(init_to_median, num_samples=num_samples)
    try:
        x = prior_median(site.prior, num_samples)
    except NotImplementedError:
        return init_to_feasible(site)
    x = x.expand(site.shape)
    return x if _in_support(site, x) else init_to_feasible(site)


# a site whose num_samples draws hold up to this many elements is drawn at once
_DRAW_BUDGET = 2 ** 22


def prior_median(d: Distribution, num_samples: int = 15) -> torch.Tensor:
    """The elementwise median of ``d``, shape ``batch_shape + event_shape``.

    ``Independent`` wrappers and elementwise monotone transforms (which commute with the
    median: ``median g(X) = g(median X)``) are unwrapped; then the median is
    ``icdf(0.5)`` where the distribution has an inverse CDF, else the median of
    ``num_samples`` draws. A large site's draws are taken in slices of its elements
    (parameters sliced along the flattened batch where the distribution can be rebuilt
    from them, else slices of full draws), so memory stays near the site's own size.

    Raises
    ------
    NotImplementedError
        If ``d`` can be neither inverted nor sampled.
    """
    shape = d.batch_shape + d.event_shape
    transforms: list[Transform] = []
    while True:
        if isinstance(d, Independent):
            d = d.base_dist
        elif isinstance(d, TransformedDistribution) and all(_monotone(t) for t in d.transforms):
            transforms = list(d.transforms) + transforms
            d = d.base_dist
        else:
            break
    x = _icdf_median(d)
    if x is None:
        x = _sampled_median(d, num_samples)
    for t in transforms:
        x = t(x)
    return x.expand(shape) if x.shape != shape else x


def _monotone(t: Transform) -> bool:
    """Whether ``t`` maps each coordinate by a strictly monotone function of it alone."""
    from torch.distributions import transforms as T

    if isinstance(t, T.ComposeTransform):
        return all(_monotone(p) for p in t.parts)
    if isinstance(t, T.IndependentTransform):
        return _monotone(t.base_transform)
    if isinstance(t, T.AffineTransform):
        return bool((torch.as_tensor(t.scale) != 0).all())
    if isinstance(t, T.PowerTransform):
        return bool((torch.as_tensor(t.exponent) != 0).all())
    return is_increasing(t)


def _icdf_median(d: Distribution) -> torch.Tensor | None:
    if d.event_shape:
        return None
    try:
        like = d.mean
        x = d.icdf(torch.full((), 0.5, dtype=like.dtype, device=like.device))
    except (NotImplementedError, AttributeError, ValueError, TypeError, RuntimeError):
        return None
    return x.expand(d.batch_shape)


def _sampled_median(d: Distribution, num_samples: int) -> torch.Tensor:
    shape = d.batch_shape + d.event_shape
    n, per = d.batch_shape.numel(), d.event_shape.numel()
    if n * per * num_samples <= _DRAW_BUDGET:
        return d.sample((num_samples,)).median(dim=0).values
    width = max(n // num_samples, _DRAW_BUDGET // (num_samples * per), 1)  # batch elements per slice
    parts = []
    for start in range(0, n, width):
        stop = min(start + width, n)
        part = _batch_slice(d, start, stop)
        if part is not None:
            draws = part.sample((num_samples,))
        else:  # full draws, sliced: more draws, the same bound on memory
            draws = torch.stack([d.sample().reshape(n, per)[start:stop] for _ in range(num_samples)])
        parts.append(draws.reshape(num_samples, stop - start, per).median(dim=0).values)
    return torch.cat(parts).reshape(shape)


def _batch_slice(d: Distribution, start: int, stop: int) -> Distribution | None:
    """``d`` restricted to flattened batch elements ``start:stop``, rebuilt from its
    parameters (``arg_constraints``); ``None`` where it cannot be rebuilt that way."""
    given = [k for k in d.arg_constraints if k in d.__dict__] or list(d.arg_constraints)
    try:
        args = {}
        for k in given:
            v = getattr(d, k)
            if not isinstance(v, torch.Tensor):
                return None
            event = d.arg_constraints[k].event_dim
            full = d.batch_shape + (v.shape[v.dim() - event:] if event else torch.Size())
            args[k] = v.expand(full).reshape((-1,) + tuple(full[len(d.batch_shape):]))[start:stop]
        part = type(d)(**args, validate_args=False)
    except (TypeError, ValueError, RuntimeError, NotImplementedError, AttributeError):
        return None
    ok = part.batch_shape == (stop - start,) and part.event_shape == d.event_shape
    return part if ok else None


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


def check_init_scale(init_scale: float) -> float:
    """A guide's ``init_scale`` (the initial posterior standard deviation in unconstrained
    space), checked.

    The scale is stored as ``softplus^{-1}(init_scale)`` in the default dtype; a value that
    is 0 there (``1e-50`` in float32) would start the guide at a zero scale.

    Raises
    ------
    GuideError
        If ``init_scale`` is not a number, is NaN, infinite, not positive, or underflows
        to 0 in the default dtype.
    """
    if isinstance(init_scale, bool) or not isinstance(init_scale, (int, float)) or not init_scale > 0 \
            or not math.isfinite(init_scale):
        raise GuideError(f"init_scale must be a finite number > 0, got {init_scale!r}")
    dtype = torch.get_default_dtype()
    raw = inv_softplus(torch.tensor(float(init_scale), dtype=dtype))
    if not bool(torch.isfinite(raw)) or not float(torch.nn.functional.softplus(raw)) > 0:
        raise GuideError(
            f"init_scale={init_scale!r} underflows to 0 in {dtype} (smallest positive normal "
            f"{torch.finfo(dtype).tiny:.3g}); use a larger init_scale or a wider default dtype"
        )
    return float(init_scale)


def load_init_fn(init_fn: InitFn | str, model, owner: str) -> InitFn:  # noqa: ANN001 - a MonadicProgram
    """An init strategy as given (a config may give its import path, resolved under the
    trust policy) and checked against ``model`` (:func:`check_init_fn`).

    Raises
    ------
    GuideError
        As :func:`check_init_fn`.
    SpecError
        If an import path is not trusted or does not resolve.
    """
    if isinstance(init_fn, str):
        from ..trust import resolve_path

        init_fn = resolve_path(init_fn, f"{owner}'s init_loc_fn")
    check_init_fn(init_fn, model)
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
