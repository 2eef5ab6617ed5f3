"""Evaluating steps outside a full trace.

Guides need a latent site's distribution *as evaluated with the current upstream values*
(a support such as ``Uniform(0, a)`` moves with ``a``), their init strategies need each
prior at the upstream sites' initial values, and ``sample_posterior`` needs the
deterministic sites of given latent draws. :class:`Evaluator` computes exactly the steps
asked for, lazily, from given values, the program's params, the batch and plate indices,
and :func:`discover_latent_sites` uses it to find every latent site's shape and support
before any data is seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.distributions import Distribution, biject_to

from ..errors import GuideError, ModelSpecError, ShapeError
from ..shapes import fmt_shape
from .plate import Plate
from .steps import Deterministic, Latent, Observed, Param, Step

if TYPE_CHECKING:
    from .program import MonadicProgram

__all__ = ["Evaluator", "MissingValue", "LatentSiteInfo", "discover_latent_sites", "deterministic_values"]


class MissingValue(LookupError):
    """A step needs a value that is neither given, computable, nor in the batch."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class Evaluator:
    """Lazy evaluation of a program's steps from known values.

    Parameters
    ----------
    program : MonadicProgram
        The program.
    batch : mapping
        A prepared batch: inputs, observed values, plate indices, and latent values given
        as data (a guide that covers some sites receives the others' values this way).
    values : mapping, optional
        Known site values (trace layout), extended by :meth:`set`.
    """

    def __init__(self, program: MonadicProgram, batch: Mapping[str, Any],
                 values: Mapping[str, torch.Tensor] | None = None) -> None:
        self.program = program
        self.batch = batch
        self.env: dict[str, Any] = dict(values or {})

    def set(self, name: str, value: torch.Tensor) -> None:
        """Bind a site's value."""
        self.env[name] = value

    def value(self, name: str) -> Any:
        """The value of a site, param, plate or batch field, computing deterministic
        sites from their dependencies on first use.

        Raises
        ------
        MissingValue
            If the value is not known (a latent site with no value, an observed site or
            input missing from the batch).
        """
        env = self.env
        if name in env:
            return env[name]
        program = self.program
        step = program._steps.get(name)
        if step is None:
            if name in program.plates:
                v = program.plate_indices(program.plates[name], self.batch)
            elif name in self.batch:
                v = self.batch[name]
            else:
                raise MissingValue(name)
        elif isinstance(step, Param):
            v = program.param_value(name)
        elif isinstance(step, Deterministic):
            v = step.fn(**self.arguments(step))
        elif isinstance(step, (Latent, Observed)) and name in self.batch and getattr(step, "obs_mask", None) is None:
            v = self.batch[name]
        else:
            raise MissingValue(name)
        env[name] = v
        return v

    def arguments(self, step: Step) -> dict[str, Any]:
        """Keyword arguments of ``step.fn`` (defaults fill names that are not sites)."""
        kwargs = {}
        for d in step.deps:
            try:
                kwargs[d] = self.value(d)
            except MissingValue:
                if d in step.defaults and d not in self.program._steps:
                    kwargs[d] = step.defaults[d]
                else:
                    raise
        return kwargs

    def distribution(self, name: str) -> Distribution:
        """The distribution of latent site ``name`` at the known upstream values.

        Raises
        ------
        MissingValue
            If an upstream value is not known.
        ModelSpecError
            If the step function does not return a ``Distribution``.
        """
        step = self.program.latent_step(name)
        d = step.fn(**self.arguments(step))
        if not isinstance(d, Distribution):
            raise ModelSpecError(
                f"site {step.name!r}: the step function must return a torch Distribution, got {type(d).__name__}"
            )
        return d


@dataclass
class LatentSiteInfo:
    """What a program says about one latent site before any data is seen.

    Attributes
    ----------
    name : str
        Site name.
    batch_shape : torch.Size
        Full batch shape (plate sizes inside, 1 outside), length ``program.batch_ndim``.
    event_shape : torch.Size
        Event shape of the prior.
    support : Constraint
        Support of the prior (at the prior draws of the sites it depends on).
    plates : tuple of Plate
        Plates the site sits in.
    prior : Distribution
        The prior evaluated at prior draws of the sites it depends on, expanded to
        ``batch_shape``.
    is_discrete : bool
        Whether the support is discrete.
    """

    name: str
    batch_shape: torch.Size
    event_shape: torch.Size
    support: Any
    plates: tuple[Plate, ...]
    prior: Distribution
    is_discrete: bool

    @property
    def shape(self) -> torch.Size:
        """``batch_shape + event_shape``."""
        return self.batch_shape + self.event_shape


def discover_latent_sites(program: MonadicProgram) -> list[LatentSiteInfo]:
    """See :meth:`MonadicProgram.latent_sites`."""
    infos: list[LatentSiteInfo] = []
    ev = Evaluator(program, {})
    nb = program.batch_ndim
    with torch.no_grad():
        for name, step in program.latent_steps.items():
            try:
                d = ev.distribution(name)
            except MissingValue as e:
                raise GuideError(
                    f"latent site {name!r} depends on {e.name!r}, which is not known before data is seen; a latent "
                    "prior may depend only on earlier latent sites, params, plates and the program's own modules "
                    "and buffers"
                ) from None
            masked = isinstance(step, Observed)
            if masked:
                if d.event_shape:
                    raise GuideError(
                        f"site {step.name!r}: obs_mask needs an event_shape of (), got {fmt_shape(d.event_shape)}"
                    )
                mask = step.obs_mask
                bshape = torch.Size([1] * (nb - mask.dim()) + list(mask.shape))
            elif getattr(step, "enumerate", None) == "parallel" and any(p.size is None for p in step.plates):
                # summed out, never guided: a plate sized later (by the data) counts 1 here
                bshape = torch.Size([1] * nb)
            else:
                bshape = program.full_batch_shape(step)
            tail = d.batch_shape[max(len(d.batch_shape) - nb, 0):]
            try:
                target = torch.broadcast_shapes(tail, bshape)
            except RuntimeError:
                target = None
            if target != bshape or len(d.batch_shape) > nb:
                raise ShapeError(
                    f"site {step.name!r}: prior batch_shape {fmt_shape(d.batch_shape)} does not fit the batch_shape "
                    f"{fmt_shape(bshape)} its plates give; declare the plate or wrap the prior in Independent(d, n)"
                )
            prior = d.expand(bshape)
            support = prior.support
            try:
                value = prior.sample()
            except NotImplementedError:
                t = biject_to(support)
                value = t(torch.zeros(t.inverse_shape(prior.batch_shape + prior.event_shape),
                                      device=program.device_of({})))
            infos.append(LatentSiteInfo(name, bshape, prior.event_shape, support, step.plates, prior,
                                        bool(support.is_discrete)))
            if not masked:
                ev.set(name, value)
    return infos


def deterministic_values(program: MonadicProgram, batch: Mapping[str, Any], values: Mapping[str, torch.Tensor],
                         sample_shape: torch.Size) -> dict[str, torch.Tensor]:
    """The deterministic sites computable from latent ``values`` (trace layout, leading
    ``sample_shape``), the params and the batch; sites that need a missing observed value
    or input are left out. A value that does not depend on the draws is expanded to
    ``sample_shape + shape``."""
    ev = Evaluator(program, batch, values)
    out = {}
    for name, step in program._steps.items():
        if not isinstance(step, Deterministic):
            continue
        try:
            v = torch.as_tensor(ev.value(name))
        except MissingValue:
            continue
        if sample_shape and not (program.ancestors(name) & values.keys()):  # the same in every draw
            v = v.expand(sample_shape + v.shape)
        out[name] = v
    return out
