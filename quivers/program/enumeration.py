"""Parallel enumeration of discrete latent sites: which sites, which dims, and the model's
log-density terms with every value of those sites at once.

Because a program's steps are declared, the enumeration plan is fixed when the model is
built: each enumerated site owns one dimension (a Markov chain two: previous and current
state), assigned once in declaration order, to the left of ``sample_shape`` and the
plates, so a value in a run of the enumerated model has shape
``enum_shape + sample_shape + batch_shape + event_shape``. Step functions written for the
trace layout broadcast unchanged as long as they index from the right (use
:func:`~quivers.program.vindex` to look values up in a table). Which site's terms span
which enumeration dims is known statically too (through deterministic steps), and is
checked against the tensors at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.distributions import Distribution

from ..errors import GuideError, ModelSpecError
from ..shapes import fmt_shape
from .markov import Markov, MarkovChain
from .steps import Deterministic, Latent, Step
from .trace import Site, Trace
from .tracing import _Run, _Tracer

if TYPE_CHECKING:
    from .program import MonadicProgram

__all__ = ["config_enumerate", "EnumVar", "EnumTerm", "EnumPlan", "Layout", "enumerated_names", "latent_reads",
           "trace_enumerated"]


def config_enumerate(model: MonadicProgram) -> MonadicProgram:
    """Mark every discrete latent site with finite support for parallel enumeration
    (Pyro's ``config_enumerate``), in place.

    Sites whose prior has ``enumerate_support`` (``Categorical``, ``Bernoulli``,
    ``OneHotCategorical``, ...) get ``enumerate="parallel"``; continuous sites and
    discrete ones without finite support (``Poisson``) are left as they are.

    Parameters
    ----------
    model : MonadicProgram
        The model.

    Returns
    -------
    MonadicProgram
        ``model`` itself.
    """
    for info in model.latent_sites():
        step = model.latent_step(info.name)
        if isinstance(step, Latent) and info.is_discrete and info.prior.has_enumerate_support:
            step.enumerate = "parallel"
    return model


def latent_reads(model: MonadicProgram) -> dict[str, frozenset[str]]:
    """For each latent, observed and factor step, the latent sites whose values its
    log-density reads: its own (a latent site), and those of its arguments, directly or
    through deterministic steps (a latent argument's own ancestors are not read: its value
    is given)."""
    values: dict[str, frozenset[str]] = {}
    out: dict[str, frozenset[str]] = {}
    latent = model.latent_steps
    for name, step in model._steps.items():
        if not isinstance(step, Step):
            continue
        deps = frozenset().union(*(values.get(d, frozenset()) for d in step.deps))
        if isinstance(step, Deterministic):
            values[name] = deps
            continue
        own = frozenset({name}) if name in latent else frozenset()
        out[name] = deps | own
        values[name] = own
    return out


def enumerated_names(model: MonadicProgram) -> list[str]:
    """Latent sites marked ``enumerate="parallel"`` (Markov chains included), in order."""
    return [n for n, s in model.latent_steps.items() if isinstance(s, Latent) and s.enumerate == "parallel"]


@dataclass(frozen=True)
class EnumVar:
    """One enumerated site.

    Attributes
    ----------
    name : str
        Site name.
    dim : int
        Position of its values' dimension among the enumeration dims (0 = leftmost).
    size : int
        ``K``, the size of its support.
    plates : frozenset of str
        The site's plates.
    in_guide : bool
        Enumerated in the guide (an expectation under ``q``) rather than summed out of
        the model.
    prev_dim : int or None
        A Markov chain's previous-state dimension.
    along : str or None
        The plate a Markov chain runs along.
    """

    name: str
    dim: int
    size: int
    plates: frozenset[str]
    in_guide: bool = False
    prev_dim: int | None = None
    along: str | None = None

    @property
    def dims(self) -> tuple[int, ...]:
        return (self.dim,) if self.prev_dim is None else (self.prev_dim, self.dim)


@dataclass
class Layout:
    """Where each dim of a full-rank term tensor is: ``E`` enumeration dims, then
    ``sample_shape``, then the program's ``batch_ndim`` plate dims.

    Attributes
    ----------
    plate_pos : dict
        Plate name -> its absolute dim.
    extents : dict
        Plate name -> its rows in this batch.
    scales : dict
        Plate name -> ``size / rows`` (1 for a plate that is not subsampled).
    sample_shape : torch.Size
        The particles' shape.
    """

    plate_pos: dict[str, int]
    extents: dict[str, int]
    scales: dict[str, float]
    sample_shape: torch.Size
    num_enum: int


@dataclass
class EnumTerm:
    """A log-density term of the enumerated model: ``tensor`` has the full rank
    ``E + len(sample_shape) + batch_ndim`` and spans the dims of ``vars``."""

    name: str
    plates: frozenset[str]
    vars: frozenset[str]
    tensor: torch.Tensor


class EnumPlan:
    """The static enumeration plan of a model: dims, sizes, each term's variables.

    Parameters
    ----------
    model : MonadicProgram
        The model.
    model_sites : sequence of str
        Sites summed out of the model.
    guide_sites : sequence of str
        Sites the guide enumerates (an expectation under its probabilities).

    Raises
    ------
    GuideError
        If a site is not discrete with finite support.
    ModelSpecError
        If a site depends on an enumerated site outside that site's plates.
    """

    def __init__(self, model: MonadicProgram, model_sites: tuple[str, ...], guide_sites: tuple[str, ...]) -> None:
        chosen = set(model_sites) | set(guide_sites)
        infos = {i.name: i for i in model.latent_sites()}
        self.vars: dict[str, EnumVar] = {}
        sizes: list[int] = []
        for name in model.latent_names:
            if name not in chosen:
                continue
            step, info = model.latent_step(name), infos[name]
            prior = info.prior.init if isinstance(info.prior, MarkovChain) else info.prior
            if not (info.is_discrete and prior.has_enumerate_support):
                raise GuideError(f"latent site {name!r} cannot be enumerated: its prior {type(prior).__name__} has "
                                 f"no finite support to enumerate (enumerate_support)")
            k = int(prior.enumerate_support(expand=False).shape[0])
            plates = frozenset(p.name for p in step.plates)
            if isinstance(step, Markov):
                if name in guide_sites:
                    raise GuideError(f"Markov site {name!r} is enumerated in the model, not by a guide")
                self.vars[name] = EnumVar(name, len(sizes) + 1, k, plates, False, len(sizes), step.along.name)
                sizes += [k, k]
            else:
                self.vars[name] = EnumVar(name, len(sizes), k, plates, name in guide_sites)
                sizes.append(k)
        self.sizes = torch.Size(sizes)
        self.term_vars: dict[str, frozenset[str]] = {}
        self.reads = latent_reads(model)  # also TraceGraph_ELBO's Rao-Blackwellisation
        for name, reads in self.reads.items():
            deps = {v for v in reads if v in self.vars and v != name}
            self.term_vars[name] = frozenset(reads & self.vars.keys())
            plates = {p.name for p in model._steps[name].plates}
            for v in deps:
                if not self.vars[v].plates <= plates:
                    raise ModelSpecError(
                        f"site {name!r} (plates {sorted(plates)}) depends on the enumerated site {v!r} of plates "
                        f"{sorted(self.vars[v].plates)}: a site outside an enumerated site's plates cannot depend "
                        "on it (sum it in a Factor inside the plate instead)"
                    )
        self.contractions: dict[Any, Any] = {}  # contraction programs by term structure, see quivers.infer

    @property
    def num_dims(self) -> int:
        """``E``, the number of enumeration dims."""
        return len(self.sizes)


class _EnumTracer(_Tracer):
    """A trace of the model with every enumerated site at all of its values at once,
    collecting each site's unreduced log-density as an :class:`EnumTerm`."""

    def __init__(self, program: MonadicProgram, run: _Run, plan: EnumPlan) -> None:
        super().__init__(program, run)
        self.plan = plan
        self.prefix = plan.sizes
        self.terms: list[EnumTerm] = []
        self.rank = plan.num_dims + len(run.sample_shape or ()) + self.nb

    def reduce(self, step: Step, lp: torch.Tensor, sample_shape: torch.Size, scale: float) -> torch.Tensor:
        lp = self.weighted(step, lp)
        if lp.dim() > self.rank:
            raise ModelSpecError(f"site {step.name!r}: its log-density has shape {fmt_shape(lp.shape)}, more dims "
                                 f"than enumeration + sample_shape + batch_shape ({self.rank})")
        lp = lp.reshape((1,) * (self.rank - lp.dim()) + lp.shape)
        allowed = {j for v in self.plan.term_vars[step.name] for j in self.plan.vars[v].dims}
        stray = [j for j in range(self.plan.num_dims) if lp.shape[j] > 1 and j not in allowed]
        if stray:
            owners = [v.name for v in self.plan.vars.values() if set(v.dims) & set(stray)]
            raise ModelSpecError(
                f"site {step.name!r}: its log-density varies with the enumerated site(s) {owners}, which it does not "
                "depend on through its step function's arguments; pass the site (or a Deterministic of it) as an "
                "argument"
            )
        self.terms.append(EnumTerm(step.name, frozenset(p.name for p in step.plates),
                                   self.plan.term_vars[step.name], lp))
        return lp

    def latent(self, step: Latent, d: Distribution, sample_latent: bool) -> Site:
        var = self.plan.vars.get(step.name)
        if var is None:
            return super().latent(step, d, sample_latent)
        run, program = self.run_state, self.program
        for p in step.plates:
            if run.extent(p) is None:
                run.extents[p.name] = program.plate_extent(p, run.batch)
        ss = run.sample_shape or torch.Size()
        markov = isinstance(d, MarkovChain)
        base = d.init if markov else d
        support = base.enumerate_support(expand=False)
        k = support.shape[0]
        if k != var.size:
            raise ModelSpecError(f"site {step.name!r}: its support has {k} values in this run, {var.size} when the "
                                 "model was built; an enumerated site's support size must not change")
        support = support.reshape((k,) + base.event_shape)
        tail = (1,) * (len(ss) + self.nb)
        e = self.plan.num_dims

        def at(j: int) -> torch.Tensor:
            return support.reshape((1,) * j + (k,) + (1,) * (e - j - 1) + tail + tuple(base.event_shape))

        value = at(var.dim)
        if markov:
            assert isinstance(step, Markov) and var.prev_dim is not None
            lp_t = d.transition(at(var.prev_dim)).log_prob(value)
            lp_0 = d.init.log_prob(value)
            first = [1] * self.rank
            t_dim = self.rank + program.plate_dim(var.along)
            first[t_dim] = d.length
            t = torch.arange(d.length, device=value.device).reshape(first)
            lp = torch.where(t == 0, lp_0, lp_t)
        else:
            lp = d.log_prob(value)
        scale = self.scale(step)
        return Site(step.name, "latent", value, self.reduce(step, lp, ss, scale), d, d.support,
                    tuple(p.name for p in step.plates), scale)


def trace_enumerated(model: MonadicProgram, plan: EnumPlan, batch: Mapping[str, Any],
                     values: Mapping[str, torch.Tensor],
                     sample_shape: torch.Size) -> tuple[Trace, list[EnumTerm], Layout]:
    """Run ``model`` with the enumerated sites of ``plan`` at all their values and the
    other latent sites at ``values`` (trace layout, leading ``sample_shape``).

    Returns
    -------
    trace : Trace
        The run's sites; ``log_prob`` holds each site's *unreduced* term (full rank).
    terms : list of EnumTerm
        Every latent, observed and factor site's log-density term.
    layout : Layout
        Where the plate dims are, their extents and subsample scales in this run.

    Raises
    ------
    BatchError
        If a latent site that is not enumerated has no value.
    """
    run = _Run(batch, dict(values), torch.Size(sample_shape), False)
    tracer = _EnumTracer(model, run, plan)
    tr = tracer.run(sample_latent=False, sample_observed=False)
    ss = torch.Size(sample_shape)
    base = plan.num_dims + len(ss) + model.batch_ndim
    extents, scales = {}, {}
    for name, plate in model.plates.items():
        ext = run.extent(plate)
        if ext is not None:
            extents[name] = ext
            scales[name] = plate.size / ext if plate.size is not None else 1.0
    pos = {name: base + model.plate_dim(name) for name in model.plates}
    return tr, tracer.terms, Layout(pos, extents, scales, ss, plan.num_dims)
