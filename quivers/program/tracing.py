"""Tracing: one run of a program on a batch and latent values, recording every site.

Called through :meth:`MonadicProgram.trace`. Every site's log-density is summed over its
plates and event dimensions to shape ``sample_shape`` and scaled by
``prod(size / extent)`` over its plates, where a plate's *extent* in this run is the
number of rows the batch holds (its subsample indices, or the rows of its data).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch.distributions import Distribution

from ..errors import BatchError, ModelSpecError, ShapeError, SupportError
from ..shapes import broadcasts_to, fmt_shape, reduce_to_sample, to_trace_layout
from ..validation import is_validation_enabled
from .batch import sliced_mask
from .plate import Plate
from .steps import Deterministic, Factor, Latent, Observed, Param, Step
from .trace import Site, Trace
from .weights import site_weight

if TYPE_CHECKING:
    from .program import MonadicProgram

__all__ = ["run_trace"]


@dataclass
class _Run:
    """State of one evaluation of a program."""

    batch: Mapping[str, Any]
    values: Mapping[str, torch.Tensor]
    sample_shape: torch.Size | None
    predictive: bool
    extents: dict[str, int] = field(default_factory=dict)

    def extent(self, plate: Plate) -> int | None:
        """Rows of ``plate`` in this run: fixed by data already seen, else the batch's
        subsample indices; ``None`` when neither says."""
        ext = self.extents.get(plate.name)
        if ext is None:
            if plate.name in self.batch:
                ext = int(self.batch[plate.name].shape[0])
            else:
                ext = getattr(self.batch, "plate_rows", {}).get(plate.name)
        return ext

    def infer_sample_shape(self, v: torch.Tensor, batch_ndim: int, event_dim: int) -> torch.Size:
        if self.sample_shape is None:
            self.sample_shape = v.shape[: max(v.dim() - batch_ndim - event_dim, 0)]
        return self.sample_shape


def run_trace(program: MonadicProgram, batch: Mapping[str, Any] | None, values: Mapping[str, torch.Tensor] | None,
              sample_shape: torch.Size | tuple[int, ...] | None, sample_latent: bool, sample_observed: bool,
              predictive: bool) -> Trace:
    """See :meth:`MonadicProgram.trace`."""
    batch = program.prepare(batch)
    values = dict(values or {})
    if is_validation_enabled():
        latent = set(program.latent_names)
        for k in values:
            if k not in latent:
                raise BatchError(
                    f"value given for {k!r}, which is not a latent site; latent sites are {sorted(latent)}"
                )
    run = _Run(batch, values, None if sample_shape is None else torch.Size(sample_shape), predictive)
    return _Tracer(program, run).run(sample_latent, sample_observed or predictive)


class _Tracer:
    #: sizes of the dims left of ``sample_shape`` that values may carry (enumeration's)
    prefix = torch.Size()

    def __init__(self, program: MonadicProgram, run: _Run) -> None:
        self.program = program
        self.run_state = run
        self.nb = program.batch_ndim

    def run(self, sample_latent: bool, sample_observed: bool) -> Trace:
        program, run = self.program, self.run_state
        tr = Trace()
        env: dict[str, Any] = {}
        for step in program._steps.values():
            if isinstance(step, Param):
                env[step.name] = program.param_value(step.name)
                tr[step.name] = Site(step.name, "param", env[step.name], support=step.constraint)
                continue
            kwargs = self.gather(step, env)
            if isinstance(step, Deterministic):
                env[step.name] = step.fn(**kwargs)
                tr[step.name] = Site(step.name, "deterministic", env[step.name], plates=_names(step.plates))
            elif isinstance(step, Factor):
                tr[step.name] = self.factor(step, step.fn(**kwargs))
            else:
                d = step.fn(**kwargs)
                if not isinstance(d, Distribution):
                    raise ModelSpecError(
                        f"site {step.name!r}: the step function must return a torch Distribution, "
                        f"got {type(d).__name__}"
                    )
                site = self.latent(step, d, sample_latent) if isinstance(step, Latent) else \
                    self.observed(step, d, sample_observed)
                env[step.name] = site.value
                tr[step.name] = site
        tr.sample_shape = run.sample_shape or torch.Size()
        return tr

    # ------------------------------------------------------------------ helpers
    def reduce(self, step: Step, lp: torch.Tensor, sample_shape: torch.Size, scale: float) -> torch.Tensor:
        """A site's log-density term as recorded: summed to ``sample_shape`` and scaled."""
        lp = reduce_to_sample(self.weighted(step, lp), sample_shape)
        return lp if scale == 1.0 else lp * scale

    def weighted(self, step: Step, lp: torch.Tensor) -> torch.Tensor:
        """``lp`` masked and scaled as the program's ``mask`` / ``scale`` surgeries say
        (unchanged for other sites)."""
        if self.program._weights and step.name in self.program._weights:
            return site_weight(self.program, step, lp, self.run_state.batch)
        return lp

    def gather(self, step: Step, env: Mapping[str, Any]) -> dict[str, Any]:
        program, batch = self.program, self.run_state.batch
        kwargs = {}
        for d in step.deps:
            if d in env:
                kwargs[d] = env[d]
            elif d in program._steps:
                raise BatchError(
                    f"site {step.name!r} depends on {d!r}, which has no value (an observed site missing "
                    "from the batch?)"
                )
            elif d in program.plates:
                kwargs[d] = program.plate_indices(program.plates[d], batch)
            elif d in batch:
                kwargs[d] = batch[d]
            elif d in step.defaults:
                kwargs[d] = step.defaults[d]
            else:
                raise BatchError(
                    f"site {step.name!r} depends on {d!r}, which is neither an earlier site nor a "
                    f"field of the batch (batch fields: {sorted(batch)})"
                )
        return kwargs

    def shape(self, step: Step) -> list[int | None]:
        """Site batch shape (length ``batch_ndim``); ``None`` where this run has not fixed
        the plate's extent yet."""
        shape: list[int | None] = [1] * self.nb
        for p in step.plates:
            shape[self.nb + self.program.plate_dim(p.name)] = self.run_state.extent(p)
        return shape

    def scale(self, step: Step) -> float:
        """``prod(size / extent)`` over the site's plates with a known size."""
        scale = 1.0
        for p in step.plates:
            ext = self.run_state.extent(p)
            if p.size is not None and ext:
                scale *= p.size / ext
        return scale

    def check_dist_shape(self, step: Step, d: Distribution, full: torch.Size) -> None:
        if not broadcasts_to(d.batch_shape, self.prefix + full):
            raise ShapeError(
                f"site {step.name!r}: distribution batch_shape {fmt_shape(d.batch_shape)} does not fit "
                f"the expected sample_shape + batch_shape {fmt_shape(full)} given its plates "
                f"{[p.name for p in step.plates]}; declare the missing plate or move those dims into the "
                "event with torch.distributions.Independent(d, n)"
            )

    # ------------------------------------------------------------------ factor sites
    def factor(self, step: Factor, lp: Any) -> Site:
        run, nb = self.run_state, self.nb
        if isinstance(lp, Distribution):
            raise ModelSpecError(
                f"factor {step.name!r}: the step function returned a {type(lp).__name__}; a Factor returns a "
                "log-density tensor (declare a Latent or Observed step for a distribution)"
            )
        if not isinstance(lp, torch.Tensor):
            lp = torch.as_tensor(lp, dtype=torch.get_default_dtype(), device=self.program.device_of(run.batch))
        ss = run.sample_shape or torch.Size()
        shape = [1] * nb
        for p in step.plates:
            i = nb + self.program.plate_dim(p.name)
            ext = run.extent(p)
            if ext is None:  # no data has fixed the plate: the term's own size, else the plate's
                j = lp.dim() - (nb - i)
                own = lp.shape[j] if j >= 0 else 1
                ext = own if own > 1 or p.size is None else p.size
                if p.size is not None and ext > p.size:
                    raise ShapeError(
                        f"factor {step.name!r}: its log-density has shape {fmt_shape(lp.shape)}, with {ext} entries "
                        f"along plate {p.name!r}, whose size is {p.size}"
                    )
                run.extents[p.name] = ext
            shape[i] = ext
        full = ss + torch.Size(shape)
        if is_validation_enabled() and not broadcasts_to(lp.shape, self.prefix + full):
            raise ShapeError(
                f"factor {step.name!r}: its log-density has shape {fmt_shape(lp.shape)}, which does not broadcast "
                f"to sample_shape + batch_shape {fmt_shape(full)} given its plates {[p.name for p in step.plates]}"
            )
        terms = lp.expand(torch.broadcast_shapes(lp.shape, full))  # one term per plate element
        scale = self.scale(step)
        return Site(step.name, "factor", lp, self.reduce(step, terms, ss, scale),
                    plates=_names(step.plates), scale=scale)

    # ------------------------------------------------------------------ latent sites
    def latent(self, step: Latent, d: Distribution, sample_latent: bool) -> Site:
        program, run, nb = self.program, self.run_state, self.nb
        event_dim = len(d.event_shape)
        v = run.values.get(step.name)
        shape = [1] * nb
        for p in step.plates:
            i = nb + program.plate_dim(p.name)
            ext = run.extent(p)
            if ext is None:
                j = v.dim() - event_dim - (nb - i) if v is not None else -1
                ext = v.shape[j] if j >= 0 else program.plate_extent(p, run.batch)
                run.extents[p.name] = ext
            shape[i] = ext
        bshape = torch.Size(shape)
        if v is not None:
            depth = program.site_depth(step.name)
            if depth < nb and v.shape != (run.sample_shape or torch.Size()) + bshape + d.event_shape:
                own = (run.sample_shape or torch.Size()) + bshape[nb - depth:] + d.event_shape
                if v.shape == own:  # a value in the site's own layout (a user guide's, a summary's)
                    v = to_trace_layout(v, len(run.sample_shape or ()), nb, depth)
            sample_shape = run.infer_sample_shape(v, nb, event_dim)
            self._check_local_rows(step, v, bshape, event_dim)
            if is_validation_enabled() and v.shape != sample_shape + bshape + d.event_shape:
                raise ShapeError(
                    f"latent site {step.name!r}: value has shape {fmt_shape(v.shape)}, expected "
                    f"sample_shape + batch_shape + event_shape = "
                    f"{fmt_shape(sample_shape + bshape + d.event_shape)}"
                )
        elif step.name in run.batch:  # conditioned on data (Pyro's ``condition``)
            sample_shape = run.sample_shape or torch.Size()
            v = run.batch[step.name]
            if v.shape != bshape + d.event_shape and v.dim() == program.site_depth(step.name) + event_dim:
                v = to_trace_layout(v, 0, nb, program.site_depth(step.name))  # given in the site's own layout
            if is_validation_enabled() and v.shape != bshape + d.event_shape:
                raise ShapeError(
                    f"latent site {step.name!r} given in the batch: value has shape {fmt_shape(v.shape)}, "
                    f"expected batch_shape + event_shape = {fmt_shape(bshape + d.event_shape)}"
                )
            if is_validation_enabled() and not bool(d.support.check(v).all()):
                raise SupportError(f"site {step.name!r}: the batch value lies outside the support {d.support}")
            scale = self.scale(step)
            lp = self.reduce(step, d.log_prob(v), sample_shape, scale)
            return Site(step.name, "observed", v, lp, d, d.support, _names(step.plates), scale)
        elif sample_latent:
            sample_shape = run.sample_shape = run.sample_shape or torch.Size()
            dd = d.expand(torch.broadcast_shapes(d.batch_shape, sample_shape + bshape))
            v = dd.rsample() if dd.has_rsample else dd.sample()
        elif getattr(step, "enumerate", None) == "parallel":
            raise BatchError(f"no value for latent site {step.name!r}, which is marked for enumeration "
                             "(enumerate='parallel'); fit with TraceEnum_ELBO (or any ELBO), which sums it out of the "
                             "model, or recover it with infer_discrete")
        else:
            raise BatchError(f"no value for latent site {step.name!r}; the guide must provide every latent site")
        if is_validation_enabled():
            self.check_dist_shape(step, d, sample_shape + bshape)
        scale = self.scale(step)
        try:
            lp = d.log_prob(v)
        except ValueError as e:  # torch's argument validation: say which site, and whose value
            if is_validation_enabled() and not bool(d.support.check(v).all()):
                raise SupportError(
                    f"latent site {step.name!r}: the value the guide gave lies outside the support {d.support} of "
                    f"the prior {type(d).__name__}; a guide's samples must lie in each site's support"
                ) from e
            raise
        lp = self.reduce(step, lp, sample_shape, scale)
        return Site(step.name, "latent", v, lp, d, d.support, _names(step.plates), scale)

    def _check_local_rows(self, step: Latent, v: torch.Tensor, bshape: torch.Size, event_dim: int) -> None:
        """A guide's value must have this run's rows along each plate of the site."""
        nb, batch = self.nb, self.run_state.batch
        for p in step.plates:
            i = nb + self.program.plate_dim(p.name)
            j = v.dim() - event_dim - (nb - i)
            if j < 0 or v.shape[j] == bshape[i]:
                continue
            if p.name not in batch and p.size is not None and v.shape[j] == p.size:
                raise ShapeError(
                    f"latent site {step.name!r} is local to plate {p.name!r}: the batch holds {bshape[i]} of its "
                    f"{p.size} rows without indices, while the guide gave all {p.size}; put the rows' indices "
                    f"in batch[{p.name!r}] so the guide can select the matching local latents"
                )
            raise ShapeError(
                f"latent site {step.name!r}: the value has {v.shape[j]} rows along plate {p.name!r}, whose extent "
                f"in this batch is {bshape[i]} (value shape {fmt_shape(v.shape)})"
            )

    # ------------------------------------------------------------------ observed sites
    def observed(self, step: Observed, d: Distribution, sample_observed: bool) -> Site:
        program, run, nb = self.program, self.run_state, self.nb
        event_dim = len(d.event_shape)
        batch = run.batch
        if step.name in batch:
            data = batch[step.name]
            if is_validation_enabled():
                self._check_observed_shape(step, data, d.event_shape)
            for p in step.plates:
                dim = program.plate_dim(p.name) - event_dim
                run.extents.setdefault(p.name, data.shape[dim] if data.dim() >= -dim else 1)
        if step.name in batch and not run.predictive:
            if step.obs_mask is not None:
                if step.unobserved_name not in run.values:
                    raise BatchError(
                        f"no value for latent site {step.unobserved_name!r} (the masked entries of "
                        f"{step.name!r}); the guide must provide it"
                    )
                imputed = run.values[step.unobserved_name]
                run.infer_sample_shape(imputed, nb, 0)
                mask = sliced_mask(program, step, batch)
                v = torch.where(mask, torch.nan_to_num(data), imputed)
            else:
                mask, v = None, data
            sample_shape = run.sample_shape or torch.Size()
            if is_validation_enabled():
                self.check_dist_shape(step, d, sample_shape + torch.Size(self.shape(step)))
                self._check_support(step.name, d, data, mask)
        elif sample_observed:  # predictive: draw the site; the batch's rows (data or inputs) size its plates
            sample_shape = run.sample_shape = run.sample_shape or torch.Size()
            db = tuple(d.batch_shape[max(len(d.batch_shape) - nb, 0):])
            db = (1,) * (nb - len(db)) + db
            shape = self.shape(step)
            for p in step.plates:
                i = nb + program.plate_dim(p.name)
                if shape[i] is None:
                    shape[i] = db[i] if db[i] > 1 or p.size is None else p.size
                    run.extents[p.name] = shape[i]
            full = sample_shape + torch.Size(shape)
            if is_validation_enabled():
                self.check_dist_shape(step, d, full)
            v = d.expand(torch.broadcast_shapes(d.batch_shape, full)).sample()
        else:
            raise BatchError(f"observed site {step.name!r} is missing from the batch (batch fields: {sorted(batch)})")
        scale = self.scale(step)
        lp = self.reduce(step, d.log_prob(v), sample_shape, scale)
        return Site(step.name, "observed", v, lp, d, d.support, _names(step.plates), scale)

    def _check_support(self, name: str, d: Distribution, data: torch.Tensor, mask: torch.Tensor | None) -> None:
        checked = self.program._checked
        support = d.support
        # a support without tensor parameters (real, positive, boolean, integer
        # intervals with int bounds, ...) gives the same answer for unchanged data
        static = mask is None and not any(isinstance(v, torch.Tensor) for v in vars(support).values())
        what = f"{name} in {support!r}"
        if static and checked.seen(data, what):
            return
        in_support = support.check(data)
        if mask is not None:  # masked entries are imputed, not data
            in_support = in_support | ~mask
        if not bool(in_support.all()):
            raise SupportError(
                f"observed site {name!r}: value lies outside the support {support} of {type(d).__name__}"
            )
        if static:
            checked.add(data, what)

    def _check_observed_shape(self, step: Observed, data: torch.Tensor, event_shape: torch.Size) -> None:
        program, nb = self.program, self.nb
        event_dim = len(event_shape)
        bdims = data.dim() - event_dim
        if bdims >= 0 and data.shape[bdims:] != event_shape:
            raise ShapeError(
                f"observed site {step.name!r}: value has shape {fmt_shape(data.shape)}, whose last {event_dim} dim(s) "
                f"{fmt_shape(data.shape[bdims:])} should be the distribution's event_shape {fmt_shape(event_shape)}"
            )
        if bdims < 0 or bdims > nb:
            raise ShapeError(
                f"observed site {step.name!r}: value has shape {fmt_shape(data.shape)}, expected "
                f"at most {nb} batch dim(s) (plates {[p.name for p in step.plates]}) followed by "
                f"{event_dim} event dim(s)"
            )
        in_plate = {nb + program.plate_dim(p.name): p for p in step.plates}
        known = self.shape(step)
        for i in range(nb - bdims, nb):
            size = data.shape[i - (nb - bdims)]
            if i in in_plate:
                p = in_plate[i]
                want = known[i]
                if want is not None and size != want:
                    hint = (f"; if the batch holds some of the plate's rows, put their indices in batch[{p.name!r}]"
                            if p.name not in self.run_state.batch else "")
                    raise ShapeError(
                        f"observed site {step.name!r}: plate {p.name!r} has length {want} in this "
                        f"batch but the value has {size} along dim {program.plate_dim(p.name)} "
                        f"(shape {fmt_shape(data.shape)}){hint}"
                    )
                if p.size is not None and size > p.size:
                    raise ShapeError(
                        f"observed site {step.name!r}: {size} rows along plate {p.name!r}, "
                        f"whose size is {p.size}"
                    )
            elif size != 1:
                raise ShapeError(
                    f"observed site {step.name!r}: value has shape {fmt_shape(data.shape)}, size {size} "
                    f"along batch dim {i - nb}, which belongs to no plate of the site; "
                    "declare the plate or wrap the distribution in Independent(d, n)"
                )


def _names(plates: tuple[Plate, ...]) -> tuple[str, ...]:
    return tuple(p.name for p in plates)
