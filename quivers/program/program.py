"""``MonadicProgram``: a Bayesian model declared as a sequence of step specs."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution, biject_to

from ..errors import BatchError, GuideError, ModelSpecError, ShapeError, SupportError
from ..shapes import broadcasts_to, fmt_shape, reduce_to_sample
from ..spec import Recordable
from ..validation import ValidationCache, is_validation_enabled
from .plate import Plate
from .steps import Deterministic, Factor, Latent, Observed, Param, Step
from .trace import Site, Trace

__all__ = ["MonadicProgram", "PreparedBatch", "LatentSiteInfo"]


class PreparedBatch(dict):
    """A batch that :meth:`MonadicProgram.prepare` has validated and subsampled.

    Preparing is idempotent: a ``PreparedBatch`` passes through ``prepare`` unchanged,
    so an objective prepares once and hands the same batch to guide and model.
    """


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
        Support of the prior.
    plates : tuple of Plate
        Plates the site sits in.
    prior : Distribution
        The prior evaluated at prior draws of the sites it depends on, expanded to
        ``batch_shape`` (used by init strategies).
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


@dataclass
class _Run:
    """State of one evaluation of a program."""

    batch: Mapping[str, Any]
    values: Mapping[str, torch.Tensor]
    sample_shape: torch.Size | None
    extents: dict[str, int] = field(default_factory=dict)

    def infer_sample_shape(self, v: torch.Tensor, batch_ndim: int, event_dim: int) -> torch.Size:
        if self.sample_shape is None:
            self.sample_shape = v.shape[: max(v.dim() - batch_ndim - event_dim, 0)]
        return self.sample_shape


class MonadicProgram(Recordable, nn.Module):
    """A generative model declared as step specs (``let z ~ D(...) in ...``).

    Subclass it, build any submodules, buffers and parameters in ``__init__``, then call
    :meth:`declare` with the steps in order. Because the steps are declared, the latent
    sites (names, shapes, supports, plates) are known when the model is built, which
    lets guides build every parameter eagerly.

    Shape convention (Pyro's and NumPyro's): each plate owns one batch dimension counted
    from the right; a site's value has shape ``sample_shape + batch_shape + event_shape``
    where ``batch_shape`` has length :attr:`batch_ndim`, with the plate's size where the
    site is in the plate and 1 elsewhere. Log-densities returned have shape
    ``sample_shape``.

    Examples
    --------
    >>> class Coin(MonadicProgram):
    ...     def __init__(self, n):
    ...         super().__init__()
    ...         flips = Plate("flips", size=n)
    ...         self.declare(
    ...             Latent("p", lambda: dist.Beta(2.0, 2.0)),
    ...             Observed("y", lambda p: dist.Bernoulli(p), plate=flips),
    ...         )
    """

    def __init__(self) -> None:
        super().__init__()
        self._steps: OrderedDict[str, Step | Param] = OrderedDict()
        self._plates: OrderedDict[str, Plate] = OrderedDict()
        self._plate_dims: dict[str, int] = {}
        self._batch_ndim = 0
        self._params = nn.ParameterDict()
        self._param_specs: dict[str, Param] = {}
        self._masks: dict[str, torch.Tensor] = {}
        self._checked = ValidationCache()

    # ------------------------------------------------------------------ declaration
    def declare(self, *steps: Step | Param) -> MonadicProgram:
        """Append steps to the program, in order.

        Parameters
        ----------
        *steps : Step or Param
            ``Latent``, ``Observed``, ``Deterministic``, ``Factor`` or ``Param`` specs.

        Returns
        -------
        MonadicProgram
            ``self``, for chaining.

        Raises
        ------
        ModelSpecError
            On a duplicate name, a dependency on a name declared later, a plate whose
            name or dim clashes with another, or an object that is not a step spec.
        """
        new_names = [getattr(s, "name", None) for s in steps]
        for i, step in enumerate(steps):
            if not isinstance(step, (Step, Param)):
                raise ModelSpecError(
                    f"declare: argument {i} is a {type(step).__name__}; expected Latent, "
                    "Observed, Deterministic, Factor or Param"
                )
            if step.name in self._steps or step.name in new_names[:i]:
                raise ModelSpecError(f"site {step.name!r} is declared twice; site names must be unique")
            later = [d for d in step.deps if d in new_names[i:]]
            if later:
                raise ModelSpecError(
                    f"site {step.name!r} depends on {later[0]!r}, which is declared at or after it; "
                    "a step may depend only on earlier sites or batch fields"
                )
            earlier = [n for n, s in self._steps.items() if step.name in s.deps]
            if earlier:
                raise ModelSpecError(
                    f"site {earlier[0]!r} depends on {step.name!r}, which is declared after it"
                )
        plan = dict(self._plate_dims)
        plates = dict(self._plates)
        for step in steps:
            for p in step.plates:
                self._register_plate(p, plates, plan)
            dims = [plan[p.name] for p in step.plates]
            if len(set(dims)) != len(dims):
                raise ModelSpecError(
                    f"site {step.name!r} sits in plates {[p.name for p in step.plates]}, two of which own "
                    f"the same dim; nested plates need distinct dims"
                )
        clash = [n for n in new_names if n in plates]
        if clash:
            raise ModelSpecError(f"site {clash[0]!r} has the name of a plate; rename the site or the plate")
        # all checks passed: commit
        self._plates = OrderedDict(plates)
        self._plate_dims = plan
        self._batch_ndim = max((-d for d in plan.values()), default=0)
        for step in steps:
            self._steps[step.name] = step
            if isinstance(step, Param):
                u = biject_to(step.constraint).inv(step.init)
                self._params[step.name] = nn.Parameter(u.detach().clone())
                self._param_specs[step.name] = step
            if isinstance(step, Observed) and step.obs_mask is not None:
                self._masks[step.name] = step.obs_mask
                self.register_buffer(f"_obs_mask_{step.name}", step.obs_mask, persistent=False)
        return self

    def _register_plate(self, p: Plate, plates: dict[str, Plate], plan: dict[str, int]) -> None:
        if p.name in plates:
            if plates[p.name] is not p:
                raise ModelSpecError(f"two different plates are named {p.name!r}")
            return
        if p.name in self._steps:
            raise ModelSpecError(f"plate {p.name!r} has the name of a site")
        if p.dim is not None:  # sibling plates may share a dim; a site in both is refused in declare
            dim = p.dim
        else:
            dim = -1
            while dim in plan.values():
                dim -= 1
        plates[p.name] = p
        plan[p.name] = dim

    # ------------------------------------------------------------------ introspection
    @property
    def steps(self) -> tuple[Step | Param, ...]:
        """The declared steps, in order."""
        return tuple(self._steps.values())

    @property
    def plates(self) -> Mapping[str, Plate]:
        """The program's plates by name."""
        return self._plates

    def plate_dim(self, name: str) -> int:
        """The (negative) batch dimension owned by plate ``name``."""
        return self._plate_dims[name]

    @property
    def batch_ndim(self) -> int:
        """Number of batch dimensions: ``max(-dim)`` over the plates (0 without plates)."""
        return self._batch_ndim

    @property
    def observed_names(self) -> list[str]:
        """Names of the observed sites."""
        return [n for n, s in self._steps.items() if isinstance(s, Observed)]

    @property
    def input_names(self) -> list[str]:
        """Batch fields the steps depend on that are not sites, params or plates."""
        out: list[str] = []
        for s in self._steps.values():
            for d in s.deps:
                if d not in self._steps and d not in self._plates and d not in out:
                    out.append(d)
        return out

    def set_plate_size(self, name: str, size: int) -> None:
        """Set the global size of a plate (for instance the data module's ``num_data``).

        Raises
        ------
        ModelSpecError
            If the plate is unknown or ``size`` is smaller than its ``subsample_size``.
        """
        if name not in self._plates:
            raise ModelSpecError(f"unknown plate {name!r}; plates are {list(self._plates)}")
        p = self._plates[name]
        if p.subsample_size is not None and size < p.subsample_size:
            raise ModelSpecError(f"plate {name!r}: size {size} < subsample_size {p.subsample_size}")
        p.size = int(size)

    # ------------------------------------------------------------------ batches
    def prepare(self, batch: Mapping[str, Any] | None, subsample: bool = True) -> PreparedBatch:
        """Validate a batch and draw subsample indices for subsampled plates.

        For each plate with ``subsample_size`` whose indices the batch does not carry,
        draws ``subsample_size`` indices without replacement (``torch.randperm``) and
        slices every plated batch field along its leading dimension; the indices are
        stored under the plate's name. A batch that already holds a plate's indices is
        taken to be sliced already (as a data loader yields it).

        Parameters
        ----------
        batch : mapping of str to tensor, or None
            Observed values by site name, program inputs by name, plate indices by
            plate name. A latent site's name conditions that site on the given value
            (shape ``batch_shape + event_shape``), as Pyro's ``condition``.
        subsample : bool
            ``False`` evaluates subsampled plates on the full batch (for prediction).

        Returns
        -------
        PreparedBatch

        Raises
        ------
        BatchError
            On an unknown key, a value that is not a real tensor (a non-numeric or
            complex value), a non-finite value in a float field, an empty field, or a
            subsample index out of range.
        """
        if isinstance(batch, PreparedBatch):
            return batch
        if batch is None:
            batch = {}
        if not isinstance(batch, Mapping):
            raise BatchError(f"a batch must be a mapping of field name -> tensor, got {type(batch).__name__}")
        out = PreparedBatch()
        known = set(self.observed_names) | set(self.input_names) | set(self._plates) | set(self.latent_names)
        for k, v in batch.items():
            if is_validation_enabled() and k not in known:
                raise BatchError(
                    f"batch field {k!r} is not used by the model; expected observed sites "
                    f"{self.observed_names}, inputs {self.input_names} or plate indices {list(self._plates)}"
                )
            if not isinstance(v, torch.Tensor):
                try:
                    v = torch.as_tensor(v)
                except Exception as e:  # noqa: BLE001
                    raise BatchError(
                        f"batch field {k!r}: expected a tensor or an array of numbers, got a {type(v).__name__} "
                        f"that torch.as_tensor cannot convert ({e})"
                    ) from e
                if v.is_floating_point():
                    v = v.to(torch.get_default_dtype())
            if v.is_complex():
                raise BatchError(
                    f"batch field {k!r} has dtype {v.dtype}; expected a real tensor (floating point, integer or "
                    "bool): split complex data into real and imaginary fields"
                )
            out[k] = v
        if is_validation_enabled():
            self._validate_fields(out)
        for name, plate in self._plates.items():
            if name in out:
                self._check_index(name, out[name])
            elif subsample and plate.subsample_size is not None:
                idx = subsample_indices(plate.size, plate.subsample_size)
                for field in self._plated_fields(name):
                    if field in out:
                        v = out[field]
                        if v.dim() == 0 or v.shape[0] != plate.size:
                            raise BatchError(
                                f"batch field {field!r}: plate {name!r} subsamples fields along their "
                                f"leading dim, expected {plate.size} rows, found shape {fmt_shape(v.shape)}"
                            )
                        out[field] = v.index_select(0, idx.to(v.device))
                out[name] = idx
        return out

    def _validate_fields(self, batch: Mapping[str, torch.Tensor]) -> None:
        for k, v in batch.items():
            if k in self._plates or self._checked.seen(v, k):
                continue
            if v.numel() == 0:
                raise BatchError(f"batch field {k!r} is empty (shape {fmt_shape(v.shape)})")
            if v.is_floating_point() or v.is_complex():
                finite = torch.isfinite(v)
                if k in self._masks:  # masked entries may hold NaN placeholders
                    finite = finite | ~self._sliced_mask(self._steps[k], batch)
                if not bool(finite.all()):
                    n = int((~finite).sum())
                    raise BatchError(
                        f"batch field {k!r} holds {n} non-finite value(s) (NaN or inf); "
                        "remove them or mark missing observations with Observed(..., obs_mask=...)"
                    )
            self._checked.add(v, k)

    def _check_index(self, name: str, idx: torch.Tensor) -> None:
        if idx.dtype not in (torch.int64, torch.int32) or idx.dim() != 1:
            raise BatchError(
                f"batch field {name!r} holds plate {name!r}'s subsample indices: expected a 1-D "
                f"integer tensor, got dtype {idx.dtype} and shape {fmt_shape(idx.shape)}"
            )
        size = self._plates[name].size
        if is_validation_enabled() and idx.numel() and (
            int(idx.min()) < 0 or (size is not None and int(idx.max()) >= size)
        ):
            raise BatchError(
                f"plate {name!r}: subsample indices must lie in [0, {size}), found range "
                f"[{int(idx.min())}, {int(idx.max())}]"
            )

    def _plated_fields(self, plate: str) -> list[str]:
        fields: list[str] = []
        for s in self._steps.values():
            if any(p.name == plate for p in s.plates):
                for f in ((s.name,) if isinstance(s, Observed) else ()) + tuple(s.deps):
                    if f not in fields and f not in self._plates and (
                        f not in self._steps or isinstance(self._steps[f], Observed)
                    ):
                        fields.append(f)
        return fields

    def plate_extent(self, plate: Plate, batch: Mapping[str, torch.Tensor]) -> int:
        """Length of a latent site's plate dimension for this batch.

        Raises
        ------
        ModelSpecError
            If the plate has no size and the batch carries no indices for it.
        """
        if plate.name in batch:
            return int(batch[plate.name].shape[0])
        if plate.size is None:
            raise ModelSpecError(
                f"plate {plate.name!r} holds latent sites but has no size; pass Plate(..., size=N)"
            )
        return plate.size

    # ------------------------------------------------------------------ evaluation
    def trace(
        self,
        batch: Mapping[str, Any] | None = None,
        values: Mapping[str, torch.Tensor] | None = None,
        sample_shape: torch.Size | tuple[int, ...] | None = None,
        *,
        sample_latent: bool = False,
        sample_observed: bool = False,
    ) -> Trace:
        """Run the program, recording every site.

        Parameters
        ----------
        batch : mapping
            Observed values, inputs and plate indices (see :meth:`prepare`).
        values : mapping of str to tensor
            Latent values, shape ``sample_shape + batch_shape + event_shape`` (as a guide
            returns them). Values for observed or deterministic sites are not allowed.
        sample_shape : torch.Size, optional
            Particle shape. Inferred from ``values`` when omitted (``()`` if empty).
        sample_latent : bool
            Draw latent sites missing from ``values`` from their prior.
        sample_observed : bool
            Draw observed sites missing from the batch (predictive mode).

        Returns
        -------
        Trace
            Sites in declaration order, each with its value and scaled log-density of
            shape ``sample_shape``.

        Raises
        ------
        BatchError
            A missing observed value or input.
        ModelSpecError
            A step returning something other than a ``Distribution`` (latent/observed).
        ShapeError
            A value or distribution whose shape disagrees with the site's plates.
        SupportError
            An observed value outside its distribution's support.
        """
        batch = self.prepare(batch)
        values = dict(values or {})
        if is_validation_enabled():
            latent = set(self.latent_names)
            for k in values:
                if k not in latent:
                    raise BatchError(
                        f"value given for {k!r}, which is not a latent site; latent sites are {sorted(latent)}"
                    )
        run = _Run(batch, values, None if sample_shape is None else torch.Size(sample_shape))
        tr = Trace()
        env: dict[str, Any] = {}
        for step in self._steps.values():
            if isinstance(step, Param):
                env[step.name] = self.param_value(step.name)
                tr[step.name] = Site(step.name, "param", env[step.name], support=step.constraint)
                continue
            kwargs = self._gather(step, env, batch)
            if isinstance(step, Deterministic):
                env[step.name] = step.fn(**kwargs)
                tr[step.name] = Site(step.name, "deterministic", env[step.name], plates=_names(step.plates))
            elif isinstance(step, Factor):
                lp = torch.as_tensor(step.fn(**kwargs))
                scale = self._scale(step, run.extents)
                tr[step.name] = Site(
                    step.name, "factor", lp, reduce_to_sample(lp, run.sample_shape or torch.Size()) * scale,
                    plates=_names(step.plates), scale=scale,
                )
            else:
                d = step.fn(**kwargs)
                if not isinstance(d, Distribution):
                    raise ModelSpecError(
                        f"site {step.name!r}: the step function must return a torch Distribution, "
                        f"got {type(d).__name__}"
                    )
                if isinstance(step, Latent):
                    site = self._latent_site(step, d, run, sample_latent)
                else:
                    site = self._observed_site(step, d, run, sample_observed)
                env[step.name] = site.value
                tr[step.name] = site
        tr.sample_shape = run.sample_shape or torch.Size()
        return tr

    def _gather(self, step: Step, env: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Any]:
        kwargs = {}
        for d in step.deps:
            if d in env:
                kwargs[d] = env[d]
            elif d in self._steps:
                raise BatchError(
                    f"site {step.name!r} depends on {d!r}, which has no value (an observed site missing "
                    "from the batch?)"
                )
            elif d in self._plates:
                kwargs[d] = batch[d] if d in batch else torch.arange(self.plate_extent(self._plates[d], batch))
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

    def _batch_shape(self, step: Step, run: _Run) -> list[int | None]:
        """Site batch shape (length ``batch_ndim``); ``None`` where the plate's length is
        not known yet in this run."""
        shape: list[int | None] = [1] * self.batch_ndim
        for p in step.plates:
            ext = run.extents.get(p.name)
            if ext is None and p.name in run.batch:
                ext = int(run.batch[p.name].shape[0])
            shape[self.batch_ndim + self._plate_dims[p.name]] = ext
        return shape

    def _scale(self, step: Step, extents: Mapping[str, int]) -> float:
        scale = 1.0
        for p in step.plates:
            ext = extents.get(p.name)
            if p.size is not None and ext:
                scale *= p.size / ext
        return scale

    def _check_dist_shape(self, step: Step, d: Distribution, full: torch.Size) -> None:
        if not broadcasts_to(d.batch_shape, full):
            raise ShapeError(
                f"site {step.name!r}: distribution batch_shape {fmt_shape(d.batch_shape)} does not fit "
                f"the expected sample_shape + batch_shape {fmt_shape(full)} given its plates "
                f"{[p.name for p in step.plates]}; declare the missing plate or move those dims into the "
                "event with torch.distributions.Independent(d, n)"
            )

    def _latent_site(self, step: Latent, d: Distribution, run: _Run, sample_latent: bool) -> Site:
        shape = self._batch_shape(step, run)
        for p in step.plates:
            ext = self.plate_extent(p, run.batch)
            seen = run.extents.setdefault(p.name, ext)
            if seen != ext:
                raise ShapeError(
                    f"latent site {step.name!r} is local to plate {p.name!r}: the batch holds {seen} "
                    f"of its {p.size} rows without indices; put the rows' indices in "
                    f"batch[{p.name!r}] so the guide can select the matching local latents"
                )
            shape[self.batch_ndim + self._plate_dims[p.name]] = ext
        bshape = torch.Size(shape)
        if step.name in run.values:
            v = run.values[step.name]
            sample_shape = run.infer_sample_shape(v, self.batch_ndim, len(d.event_shape))
            if is_validation_enabled() and v.shape != sample_shape + bshape + d.event_shape:
                raise ShapeError(
                    f"latent site {step.name!r}: value has shape {fmt_shape(v.shape)}, expected "
                    f"sample_shape + batch_shape + event_shape = "
                    f"{fmt_shape(sample_shape + bshape + d.event_shape)}"
                )
        elif step.name in run.batch:  # conditioned on data (Pyro's ``condition``)
            sample_shape = run.sample_shape or torch.Size()
            v = run.batch[step.name]
            if is_validation_enabled() and v.shape != bshape + d.event_shape:
                raise ShapeError(
                    f"latent site {step.name!r} given in the batch: value has shape {fmt_shape(v.shape)}, "
                    f"expected batch_shape + event_shape = {fmt_shape(bshape + d.event_shape)}"
                )
            if is_validation_enabled() and not bool(d.support.check(v).all()):
                raise SupportError(f"site {step.name!r}: the batch value lies outside the support {d.support}")
            scale = subsample_scale(step.plates, run.batch)
            lp = reduce_to_sample(d.log_prob(v), sample_shape) * scale
            return Site(step.name, "observed", v, lp, d, d.support, _names(step.plates), scale)
        elif sample_latent:
            sample_shape = run.sample_shape = run.sample_shape or torch.Size()
            dd = d.expand(torch.broadcast_shapes(d.batch_shape, sample_shape + bshape))
            v = dd.rsample() if dd.has_rsample else dd.sample()
        else:
            raise BatchError(f"no value for latent site {step.name!r}; the guide must provide every latent site")
        if is_validation_enabled():
            self._check_dist_shape(step, d, sample_shape + bshape)
        scale = subsample_scale(step.plates, run.batch)
        lp = reduce_to_sample(d.log_prob(v), sample_shape) * scale
        return Site(step.name, "latent", v, lp, d, d.support, _names(step.plates), scale)

    def _observed_site(self, step: Observed, d: Distribution, run: _Run, sample_observed: bool) -> Site:
        event_dim = len(d.event_shape)
        batch = run.batch
        if step.name in batch:
            data = batch[step.name]
            if is_validation_enabled():
                self._check_observed_shape(step, data, event_dim, run)
            for p in step.plates:
                dim = self._plate_dims[p.name] - event_dim
                run.extents.setdefault(p.name, data.shape[dim] if data.dim() >= -dim else 1)
            if step.obs_mask is not None:
                if step.unobserved_name not in run.values:
                    raise BatchError(
                        f"no value for latent site {step.unobserved_name!r} (the masked entries of "
                        f"{step.name!r}); the guide must provide it"
                    )
                imputed = run.values[step.unobserved_name]
                run.infer_sample_shape(imputed, self.batch_ndim, 0)
                mask = self._sliced_mask(step, batch)
                data = torch.nan_to_num(data)
                v = torch.where(mask, data, imputed)
            else:
                mask, v = None, data
            sample_shape = run.sample_shape or torch.Size()
            if is_validation_enabled():
                self._check_dist_shape(step, d, sample_shape + torch.Size(self._batch_shape(step, run)))
                self._check_support(step.name, d, data, mask)
        elif sample_observed:
            sample_shape = run.sample_shape = run.sample_shape or torch.Size()
            nb = self.batch_ndim
            db = tuple(d.batch_shape[max(len(d.batch_shape) - nb, 0):])
            db = (1,) * (nb - len(db)) + db
            shape = self._batch_shape(step, run)
            for p in step.plates:  # a plate no data has fixed yet: its size, else the distribution's
                i = nb + self._plate_dims[p.name]
                if shape[i] is None:
                    shape[i] = p.size if p.size is not None else db[i]
            for p in step.plates:
                run.extents.setdefault(p.name, shape[nb + self._plate_dims[p.name]])
            full = sample_shape + torch.Size(shape)
            if is_validation_enabled():
                self._check_dist_shape(step, d, full)
            v = d.expand(torch.broadcast_shapes(d.batch_shape, full)).sample()
        else:
            raise BatchError(f"observed site {step.name!r} is missing from the batch (batch fields: {sorted(batch)})")
        scale = self._scale(step, run.extents)
        lp = reduce_to_sample(d.log_prob(v), sample_shape) * scale
        return Site(step.name, "observed", v, lp, d, d.support, _names(step.plates), scale)

    def _check_support(self, name: str, d: Distribution, data: torch.Tensor, mask: torch.Tensor | None) -> None:
        support = d.support
        # a support without tensor parameters (real, positive, boolean, integer
        # intervals with int bounds, ...) gives the same answer for unchanged data
        static = mask is None and not any(isinstance(v, torch.Tensor) for v in vars(support).values())
        what = f"{name} in {support!r}"
        if static and self._checked.seen(data, what):
            return
        in_support = support.check(data)
        if mask is not None:  # masked entries are imputed, not data
            in_support = in_support | ~mask
        if not bool(in_support.all()):
            raise SupportError(
                f"observed site {name!r}: value lies outside the support {support} of {type(d).__name__}"
            )
        if static:
            self._checked.add(data, what)

    def _sliced_mask(self, step: Observed, batch: Mapping[str, Any]) -> torch.Tensor:
        mask = getattr(self, f"_obs_mask_{step.name}")
        for p in step.plates:
            if p.name in batch:
                dim = self._plate_dims[p.name]
                if mask.dim() >= -dim and mask.shape[dim] == p.size:
                    mask = mask.index_select(dim, batch[p.name].to(mask.device))
        return mask

    def _check_observed_shape(self, step: Observed, data: torch.Tensor, event_dim: int, run: _Run) -> None:
        nb = self.batch_ndim
        bdims = data.dim() - event_dim
        if bdims < 0 or bdims > nb:
            raise ShapeError(
                f"observed site {step.name!r}: value has shape {fmt_shape(data.shape)}, expected "
                f"at most {nb} batch dim(s) (plates {[p.name for p in step.plates]}) followed by "
                f"{event_dim} event dim(s)"
            )
        in_plate = {nb + self._plate_dims[p.name]: p for p in step.plates}
        known = self._batch_shape(step, run)
        for i in range(nb - bdims, nb):
            size = data.shape[i - (nb - bdims)]
            if i in in_plate:
                p = in_plate[i]
                want = known[i]
                if want is not None and size != want:
                    raise ShapeError(
                        f"observed site {step.name!r}: plate {p.name!r} has length {want} in this "
                        f"batch but the value has {size} along dim {self._plate_dims[p.name]} "
                        f"(shape {fmt_shape(data.shape)})"
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

    def param_value(self, name: str) -> torch.Tensor:
        """Constrained value of the learnable :class:`Param` ``name``."""
        return biject_to(self._param_specs[name].constraint)(self._params[name])

    def log_joint(
        self, batch: Mapping[str, Any] | None, values: Mapping[str, torch.Tensor],
        sample_shape: torch.Size | tuple[int, ...] | None = None,
    ) -> torch.Tensor:
        """Scaled log joint density ``log p(data, values)``; shape ``sample_shape``."""
        return self.trace(batch, values, sample_shape).log_joint()

    def sample(
        self, batch: Mapping[str, Any] | None = None, sample_shape: torch.Size | tuple[int, ...] = (),
    ) -> dict[str, torch.Tensor]:
        """Draw every site from the prior (observed values in ``batch`` are ignored).

        Returns
        -------
        dict
            ``{site name: value}`` with values of shape ``sample_shape + batch_shape +
            event_shape``.
        """
        batch = {k: v for k, v in (batch or {}).items() if k not in self.observed_names}
        with torch.no_grad():
            tr = self.trace(batch, {}, sample_shape, sample_latent=True, sample_observed=True)
        return tr.values_of(("latent", "observed", "deterministic"))

    # ------------------------------------------------------------------ discovery
    @property
    def latent_names(self) -> list[str]:
        """Latent sites in declaration order (``<name>_unobserved`` for masked observations)."""
        out = []
        for s in self._steps.values():
            if isinstance(s, Latent):
                out.append(s.name)
            elif isinstance(s, Observed) and s.obs_mask is not None:
                out.append(s.unobserved_name)
        return out

    def latent_sites(self) -> list[LatentSiteInfo]:
        """Shapes, supports, plates and priors of the latent sites, found without data.

        Evaluates the latent steps (and the deterministic steps they depend on) once,
        at full plate sizes, under ``torch.no_grad``. Draws from the prior (one random
        draw per site; flat priors use ``biject_to(support)(0)``).

        Raises
        ------
        GuideError
            If a latent site's prior depends on a batch field, or sits in a plate of
            unknown size.
        """
        infos: list[LatentSiteInfo] = []
        env: dict[str, Any] = {}
        nb = self.batch_ndim
        with torch.no_grad():
            for step in self._steps.values():
                if isinstance(step, Param):
                    env[step.name] = self.param_value(step.name)
                    continue
                is_masked = isinstance(step, Observed) and step.obs_mask is not None
                missing = [d for d in step.deps if d not in env and d not in step.defaults]
                missing = [d for d in missing if d not in self._plates]
                if missing:
                    if isinstance(step, Latent) or is_masked:
                        raise GuideError(
                            f"latent site {step.name!r} depends on {missing}, which is not known before "
                            "data is seen; a latent prior may depend only on earlier latent sites, "
                            "params, plates and the program's own modules and buffers"
                        )
                    continue
                if not isinstance(step, (Latent, Deterministic)) and not is_masked:
                    continue
                kwargs = {d: env.get(d, step.defaults.get(d)) for d in step.deps}
                for d in step.deps:
                    if d in self._plates:
                        kwargs[d] = torch.arange(self.plate_extent(self._plates[d], {}))
                out = step.fn(**kwargs)
                if isinstance(step, Deterministic):
                    env[step.name] = out
                    continue
                if not isinstance(out, Distribution):
                    raise ModelSpecError(
                        f"site {step.name!r}: the step function must return a torch Distribution, "
                        f"got {type(out).__name__}"
                    )
                shape = [1] * nb
                for p in step.plates:
                    shape[nb + self._plate_dims[p.name]] = self.plate_extent(p, {})
                bshape = torch.Size(shape)
                if is_masked:
                    mask = step.obs_mask
                    bshape = torch.Size([1] * (nb - mask.dim()) + list(mask.shape))
                    if out.event_shape:
                        raise GuideError(
                            f"site {step.name!r}: obs_mask needs an event_shape of (), got {fmt_shape(out.event_shape)}"
                        )
                tail = out.batch_shape[max(len(out.batch_shape) - nb, 0):]
                try:
                    target = torch.broadcast_shapes(tail, bshape)
                except RuntimeError:
                    target = None
                if target != bshape or len(out.batch_shape) > nb:
                    raise ShapeError(
                        f"site {step.name!r}: prior batch_shape {fmt_shape(out.batch_shape)} does not fit "
                        f"the batch_shape {fmt_shape(bshape)} its plates give; declare the plate or wrap "
                        "the prior in Independent(d, n)"
                    )
                prior = out.expand(bshape)
                name = step.unobserved_name if is_masked else step.name
                support = prior.support
                try:
                    value = prior.sample()
                except NotImplementedError:
                    t = biject_to(support)
                    value = t(torch.zeros(t.inverse_shape(prior.batch_shape + prior.event_shape)))
                infos.append(LatentSiteInfo(
                    name, bshape, prior.event_shape, support, step.plates, prior, bool(support.is_discrete),
                ))
                if not is_masked:
                    env[step.name] = value
        return infos


def subsample_scale(plates: tuple[Plate, ...], batch: Mapping[str, torch.Tensor]) -> float:
    """Scale of a site local to ``plates``: ``prod(size / len(indices))`` over the plates
    whose subsample indices the batch carries."""
    scale = 1.0
    for p in plates:
        if p.name in batch and p.size is not None:
            scale *= p.size / batch[p.name].shape[0]
    return scale


def subsample_indices(n: int, k: int) -> torch.Tensor:
    """``k`` distinct indices drawn uniformly from ``range(n)``, in O(k) time for k << n.

    Draws with replacement and tops up until ``k`` are distinct; by exchangeability every
    k-subset is equally likely. (``torch.randperm(n)[:k]`` costs O(n) per step, which
    would make a subsampled step's cost grow with the data size.) Falls back to
    ``randperm`` when ``k > n / 4``. The indices come back sorted.
    """
    if 4 * k > n:
        return torch.randperm(n)[:k]
    idx = torch.unique(torch.randint(n, (k,)))
    while idx.numel() < k:
        idx = torch.unique(torch.cat([idx, torch.randint(n, (k - idx.numel(),))]))
    return idx


def _names(plates: tuple[Plate, ...]) -> tuple[str, ...]:
    return tuple(p.name for p in plates)
