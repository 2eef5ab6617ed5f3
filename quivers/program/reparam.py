"""Reparameterisers: rewrite one latent site as auxiliary sites and a deterministic step
(Pyro's ``pyro.infer.reparam``, NumPyro's ``numpyro.infer.reparam``), applied with
:meth:`MonadicProgram.reparam <quivers.program.MonadicProgram.reparam>`.

A reparameterised program has the same distribution over the original site's value:
the guide approximates the auxiliary sites (whose posterior geometry may be easier),
and the original site remains in every trace and prediction as a deterministic site.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch.distributions import Distribution, Independent, Normal, TransformedDistribution, constraints

from ..errors import ModelSpecError
from .projected import ProjectedNormal, to_sphere
from .steps import Deterministic, Latent, Param, Step

__all__ = ["Reparam", "JointReparam", "LocScaleReparam", "TransformReparam", "ProjectedNormalReparam",
           "unwrap_independent"]


class Reparam:
    """Base of reparameterisers: :meth:`apply` turns one latent step into the steps that
    replace it, the last of them a :class:`Deterministic` of the site's name."""

    def apply(self, program: Any, step: Latent) -> list[Step | Param]:
        """The steps replacing ``step`` in ``program`` (declared in its place, in order).

        Raises
        ------
        ModelSpecError
            If the reparameteriser does not apply to the site.
        """
        raise NotImplementedError


class JointReparam:
    """Base of reparameterisers that rewrite several sites at once (``NeuTraReparam``):
    :meth:`rewrite` turns the program's whole step list into the new one. Applied with
    ``model.reparam(joint)``."""

    def rewrite(self, program: Any, steps: list[Step | Param]) -> list[Step | Param]:
        """The new step list of ``program`` (whose current steps are ``steps``).

        Raises
        ------
        ModelSpecError
            If the reparameteriser does not apply to the program.
        """
        raise NotImplementedError


def step_fn(fn: Callable[..., Any], names: tuple[str, ...], defaults: dict[str, Any]) -> Callable[..., Any]:
    """``fn`` with a signature naming ``names`` (keyword-only), as step functions name
    their dependencies."""
    params = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY,
                                default=defaults.get(n, inspect.Parameter.empty)) for n in names]

    def call(**kwargs: Any) -> Any:
        return fn(**kwargs)

    call.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return call


def unwrap_independent(d: Distribution) -> tuple[Distribution, int]:
    """The distribution inside ``Independent`` wrappers and how many event dims they add."""
    n = 0
    while isinstance(d, Independent):
        n += d.reinterpreted_batch_ndims
        d = d.base_dist
    return d, n


def _wrap(d: Distribution, n: int) -> Distribution:
    return Independent(d, n) if n else d


class LocScaleReparam(Reparam):
    """Partial non-centring of a location-scale site (Gorinova, Moore & Hoffman 2020,
    "Automatic Reparameterisation of Probabilistic Programs"; Pyro's and NumPyro's
    ``LocScaleReparam``).

    A site ``x ~ D(loc, scale)`` becomes ``x_decentered ~ D(c loc, scale^c)`` and
    ``x = loc + scale^(1 - c) (x_decentered - c loc)``: ``c = 1`` is the centred model,
    ``c = 0`` the non-centred one (``x_decentered ~ D(0, 1)``, ``x = loc + scale
    x_decentered``). The distribution of ``x`` is unchanged for every ``c``.

    Parameters
    ----------
    centered : float or None
        The centeredness ``c`` in [0, 1]; ``None`` learns it per element of the site: a
        ``Param`` named ``<site>_centered`` (unit interval, initial 0.5, the site's
        shape) that the optimizer moves with the guide's parameters: ``SVIModule``'s
        default optimizer includes the model's parameters; with ``SVI``, pass
        ``model.parameters()`` to the optimizer with the guide's (its default holds the
        guide's only, and ``c`` then stays at 0.5).

    Notes
    -----
    ``D`` is any ``torch.distributions`` family with ``loc`` and ``scale`` arguments
    (``Normal``, ``StudentT``, ``Cauchy``, ``Laplace``, ``Gumbel``), possibly inside
    ``Independent``; its other arguments (``StudentT``'s ``df``) are kept.

    Raises
    ------
    ModelSpecError
        If ``centered`` is neither ``None`` nor a number in [0, 1]; when applied, if the
        site sits in a subsampled plate with ``centered=None``; when the model runs, if
        the site's prior is not a location-scale family.
    """

    def __init__(self, centered: float | None = None) -> None:
        if centered is not None:
            if isinstance(centered, bool) or not isinstance(centered, (int, float)) or not 0.0 <= centered <= 1.0:
                raise ModelSpecError(f"LocScaleReparam: centered must be None or a number in [0, 1], got {centered!r}")
            centered = float(centered)
        self.centered = centered

    def apply(self, program: Any, step: Latent) -> list[Step | Param]:
        name, learn = step.name, self.centered is None
        dec, cname = f"{name}_decentered", f"{name}_centered"
        out: list[Step | Param] = []
        deps = step.deps
        if learn:
            if any(p.subsample_size is not None for p in step.plates):
                raise ModelSpecError(f"LocScaleReparam: site {name!r} sits in a subsampled plate; a learned "
                                     "centeredness per element needs every row: pass centered=<number>")
            info = next(s for s in program.latent_sites() if s.name == name)
            out.append(Param(cname, torch.full(info.batch_shape + info.event_shape, 0.5), constraints.unit_interval))
            deps = (*deps, cname)
        const = self.centered
        fn = step.fn

        def parts(kw: dict[str, Any]) -> tuple[Distribution, int, torch.Tensor, torch.Tensor, Any]:
            c = kw.pop(cname) if learn else const
            base, n = unwrap_independent(fn(**kw))
            if not (hasattr(base, "loc") and hasattr(base, "scale") and "loc" in base.arg_constraints):
                raise ModelSpecError(f"LocScaleReparam: site {name!r} has a {type(base).__name__} prior, which is "
                                     "not a location-scale family (a distribution with loc and scale arguments)")
            return base, n, base.loc, base.scale, c

        def decentered(**kw: Any) -> Distribution:
            base, n, loc, scale, c = parts(kw)
            other = {k: getattr(base, k) for k in base.arg_constraints if k not in ("loc", "scale")}
            return _wrap(type(base)(loc=loc * c, scale=scale ** c, **other), n)

        def value(**kw: Any) -> torch.Tensor:
            x = kw.pop(dec)
            _, _, loc, scale, c = parts(kw)
            return loc + scale ** (1 - c) * (x - c * loc)

        out.append(Latent(dec, step_fn(decentered, deps, step.defaults), plate=step.plates))
        out.append(Deterministic(name, step_fn(value, (dec, *deps), step.defaults), plate=step.plates))
        return out


class TransformReparam(Reparam):
    """A ``TransformedDistribution`` site drawn as its base and pushed through its
    transforms (Pyro's and NumPyro's ``TransformReparam``): ``x ~ T(base)`` becomes
    ``x_base ~ base`` and ``x = T(x_base)``, so a guide approximates the base (a
    ``LogNormal`` site's ``Normal``, say).

    Raises
    ------
    ModelSpecError
        When the model runs, if the site's prior is not a ``TransformedDistribution``
        (possibly inside ``Independent``).
    """

    def apply(self, program: Any, step: Latent) -> list[Step | Param]:
        name, fn = step.name, step.fn
        base_name = f"{name}_base"

        def parts(kw: dict[str, Any]) -> tuple[TransformedDistribution, int]:
            d, n = unwrap_independent(fn(**kw))
            if not isinstance(d, TransformedDistribution):
                raise ModelSpecError(f"TransformReparam: site {name!r} has a {type(d).__name__} prior, not a "
                                     "TransformedDistribution")
            return d, n

        def base(**kw: Any) -> Distribution:
            d, n = parts(kw)
            # the transforms' event dims move into the base's: keep the site's event rank
            extra = len(d.event_shape) - len(d.base_dist.event_shape)
            return _wrap(d.base_dist, n + extra)

        def value(**kw: Any) -> torch.Tensor:
            x = kw.pop(base_name)
            d, _ = parts(kw)
            for t in d.transforms:
                x = t(x)
            return x

        return [Latent(base_name, step_fn(base, step.deps, step.defaults), plate=step.plates),
                Deterministic(name, step_fn(value, (base_name, *step.deps), step.defaults), plate=step.plates)]


class ProjectedNormalReparam(Reparam):
    """A :class:`~quivers.program.ProjectedNormal` site (on the unit sphere, which has no
    ``biject_to``) drawn as its normal vector (Pyro's and NumPyro's
    ``ProjectedNormalReparam``): ``x ~ ProjectedNormal(c)`` becomes
    ``x_normal ~ Normal(c, I)`` (event dim 1) and ``x = x_normal / |x_normal|``, so
    automatic guides approximate ``x_normal`` in ``R^D``.

    Raises
    ------
    ModelSpecError
        When the model runs, if the site's prior is not a ``ProjectedNormal`` (possibly
        inside ``Independent``).
    """

    def apply(self, program: Any, step: Latent) -> list[Step | Param]:
        name, fn = step.name, step.fn
        zname = f"{name}_normal"

        def normal(**kw: Any) -> Distribution:
            d, n = unwrap_independent(fn(**kw))
            if not isinstance(d, ProjectedNormal):
                raise ModelSpecError(f"ProjectedNormalReparam: site {name!r} has a {type(d).__name__} prior, not a "
                                     "ProjectedNormal")
            return _wrap(Independent(Normal(d.concentration, torch.ones_like(d.concentration)), 1), n)

        def value(**kw: Any) -> torch.Tensor:
            return to_sphere(kw[zname])

        return [Latent(zname, step_fn(normal, step.deps, step.defaults), plate=step.plates),
                Deterministic(name, step_fn(value, (zname,), {}), plate=step.plates)]
