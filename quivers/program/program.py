"""``MonadicProgram``: a Bayesian model declared as a sequence of step specs.

This module holds the declaration and what it tells before any data is seen (sites,
plates, dependencies, layouts); batches are prepared in :mod:`.batch`, traces run in
:mod:`.tracing`, and steps are evaluated outside traces in :mod:`.evaluate`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.distributions import biject_to

from ..errors import ModelSpecError
from ..shapes import to_site_layout
from ..spec import Recordable
from ..validation import ValidationCache
from .batch import PreparedBatch, prepare_batch
from .declaration import check_obs_mask, plan_declaration
from .evaluate import LatentSiteInfo, discover_latent_sites
from .markov import Markov
from .names import check_size
from .plate import Plate
from .steps import Deterministic, Latent, Observed, Param, Step
from .trace import Trace
from .tracing import run_trace

__all__ = ["MonadicProgram", "PreparedBatch", "LatentSiteInfo"]


class MonadicProgram(Recordable, nn.Module):
    """A generative model declared as step specs (``let z ~ D(...) in ...``).

    Subclass it, build any submodules, buffers and parameters in ``__init__``, then call
    :meth:`declare` with the steps in order. Because the steps are declared, the latent
    sites (names, shapes, supports, plates) are known when the model is built, which
    lets guides build every parameter eagerly.

    Shape convention (Pyro's and NumPyro's): each plate owns one batch dimension counted
    from the right; inside traces a site's value has shape ``sample_shape + batch_shape +
    event_shape`` where ``batch_shape`` has length :attr:`batch_ndim`, with the plate's
    size where the site is in the plate and 1 elsewhere. Log-densities returned have
    shape ``sample_shape``. What users read back (``sample``, guides' ``median`` and
    ``sample_posterior``, ``Predictive``) keeps only each site's own plate dims
    (:meth:`to_site_layout`).

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

    #: per-site ``(mask buffer, scale)`` set by :meth:`mask` / :meth:`scale` (none here)
    _weights: dict[str, tuple[str | None, str | float | None]] = {}

    def __init__(self) -> None:
        super().__init__()
        self._steps: OrderedDict[str, Step | Param] = OrderedDict()
        self._plates: OrderedDict[str, Plate] = OrderedDict()
        self._plate_dims: dict[str, int] = {}
        self._batch_ndim = 0
        self._params = nn.ParameterDict()
        self._param_specs: dict[str, Param] = {}
        self._latent_steps: OrderedDict[str, Step] = OrderedDict()
        self._ancestors: dict[str, frozenset[str]] = {}
        self._depths: dict[str, int] = {}
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
        plates, plan = plan_declaration(self, steps)
        # all checks passed: commit
        self._plates = OrderedDict(plates)
        self._plate_dims = plan
        self._batch_ndim = max((-d for d in plan.values()), default=0)
        for step in steps:
            self._steps[step.name] = step
            self._ancestors[step.name] = frozenset(
                a for d in step.deps if d in self._steps for a in (d, *self._ancestors[d]))
            self._depths[step.name] = max((-plan[p.name] for p in step.plates), default=0)
            if isinstance(step, Param):
                u = biject_to(step.constraint).inv(step.init)
                self._params[step.name] = nn.Parameter(u.detach().clone())
                self._param_specs[step.name] = step
            elif isinstance(step, Latent):
                self._latent_steps[step.name] = step
                if isinstance(step, Markov):
                    step._dim = plan[step.along.name]
            elif isinstance(step, Observed) and step.obs_mask is not None:
                self._latent_steps[step.unobserved_name] = step
                self._depths[step.unobserved_name] = self._depths[step.name]
                self.register_buffer(f"_obs_mask_{step.name}", step.obs_mask, persistent=False)
        return self

    # ------------------------------------------------------------------ surgery
    def condition(self, values: Mapping[str, Any]) -> MonadicProgram:
        """A new program in which the latent sites of ``values`` are observed at those
        values (Pyro's ``poutine.condition``, NumPyro's ``handlers.condition``).

        The new program shares this one's parameters and submodules. Its guides leave
        the conditioned sites out, and its batches need not (and must not) carry them.
        To condition on values that change from batch to batch, pass them in the batch
        instead (a latent site's name in a batch conditions it, see :meth:`prepare`).

        Parameters
        ----------
        values : mapping of str to tensor
            Site name -> value, in the site's own layout (as ``sample_posterior`` returns
            a draw) or trace layout, full size along subsampled plates (the batch's
            indices select the rows), without sample dims.

        Returns
        -------
        MonadicProgram
            A :class:`~quivers.program.surgery.DerivedProgram`.

        Raises
        ------
        ModelSpecError
            If a name is not a latent site (or is a Markov chain site), or a value is not
            a real tensor.
        """
        from .surgery import derive
        return derive(self, condition=values)

    def do(self, values: Mapping[str, Any]) -> MonadicProgram:
        """A new program in which each site of ``values`` is fixed at that value and its
        log-density dropped: an intervention (Pyro's ``poutine.do``; Pearl's do-operator).

        The site becomes a deterministic step: downstream sites see the value, and
        nothing upstream is informed by it (unlike :meth:`condition`). The new program
        shares this one's parameters and submodules.

        Parameters
        ----------
        values : mapping of str to tensor
            Latent or observed site name -> value, shaped as the step functions that read
            it expect (the site's own layout), without sample dims.

        Raises
        ------
        ModelSpecError
            If a name is not a latent or observed site, or a value is not a real tensor.
        """
        from .surgery import derive
        return derive(self, do=values)

    def mask(self, site: str, mask: Any) -> MonadicProgram:
        """A new program in which ``site``'s log-density counts only where ``mask`` is
        ``True`` (Pyro's ``poutine.mask``): entries where it is ``False`` contribute 0 to
        the log joint, also where their log-density is ``-inf`` or NaN. With validation
        on, observed data outside the support is rejected whether masked or not (as in
        Pyro); guides still sample a masked latent site.

        Parameters
        ----------
        site : str
            A latent, observed or factor site.
        mask : bool tensor
            Right-aligned with the site's batch dims: along each of the site's plates'
            dims it has the plate's size or 1, and 1 along other dims (a ``bool`` scalar
            masks the whole site). The batch's subsample indices select its rows.

        Raises
        ------
        ModelSpecError
            If ``site`` is not a latent, observed or factor site, the mask is not a bool
            tensor, or its shape does not fit the site's plates.
        """
        from .surgery import derive
        return derive(self, mask={site: mask})

    def scale(self, site: str, factor: Any) -> MonadicProgram:
        """A new program in which ``site``'s log-density is multiplied by ``factor``
        (Pyro's ``poutine.scale``), on top of any subsampling scale.

        Parameters
        ----------
        site : str
            A latent, observed or factor site.
        factor : float or tensor
            Finite and >= 0; a tensor is shaped as for :meth:`mask`.

        Raises
        ------
        ModelSpecError
            If ``site`` is not a latent, observed or factor site, or the factor is not
            finite and >= 0 or does not fit the site's plates.
        """
        from .surgery import derive
        return derive(self, scale={site: factor})

    def reparam(self, config: Mapping[str, Any] | Any) -> MonadicProgram:
        """A new program in which each named latent site is rewritten by a
        reparameteriser (Pyro's ``poutine.reparam``): auxiliary latent sites that guides
        approximate, and the site itself as a deterministic step of them, with the same
        distribution.

        Parameters
        ----------
        config : mapping of str to Reparam, or JointReparam
            Site name -> :class:`~quivers.program.reparam.LocScaleReparam`,
            :class:`~quivers.program.reparam.TransformReparam`, ...; or one
            :class:`~quivers.program.reparam.JointReparam` for several sites at once
            (:class:`~quivers.infer.NeuTraReparam`).

        Raises
        ------
        ModelSpecError
            If a name is not a latent site, or is marked for enumeration, or a value is
            not a ``Reparam``, or as the reparameteriser raises.
        """
        from .surgery import derive
        return derive(self, reparam=config)

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

    @property
    def latent_names(self) -> list[str]:
        """Latent sites in declaration order (``<name>_unobserved`` for masked observations)."""
        return list(self._latent_steps)

    @property
    def latent_steps(self) -> Mapping[str, Step]:
        """The step of each latent site (the ``Observed`` step for ``<name>_unobserved``)."""
        return self._latent_steps

    def latent_step(self, name: str) -> Step:
        """The step of latent site ``name``.

        Raises
        ------
        ModelSpecError
            If ``name`` is not a latent site.
        """
        try:
            return self._latent_steps[name]
        except KeyError:
            raise ModelSpecError(f"{name!r} is not a latent site; latent sites are {self.latent_names}") from None

    def ancestors(self, name: str) -> frozenset[str]:
        """Every step ``name`` depends on, directly or through other steps."""
        step = self._latent_steps.get(name) or self._steps[name]
        return self._ancestors[step.name]

    def depends_on_draws(self, name: str) -> bool:
        """Whether site ``name`` depends, directly or not, on a latent or observed site."""
        return any(isinstance(self._steps[a], (Latent, Observed)) for a in self.ancestors(name))

    def expand_constant(self, name: str, value: torch.Tensor, sample_shape: torch.Size) -> torch.Tensor:
        """A deterministic site's value with ``sample_shape`` in front when it does not
        depend on any draw (it is then the same in every draw)."""
        step = self._steps.get(name)
        if sample_shape and isinstance(step, Deterministic) and not self.depends_on_draws(name):
            value = torch.as_tensor(value)
            return value.expand(sample_shape + value.shape)
        return value

    def site_plates(self, name: str) -> tuple[Plate, ...]:
        """The plates of site ``name`` (a latent, observed, deterministic or factor site)."""
        step = self._latent_steps.get(name) or self._steps[name]
        return step.plates

    def site_depth(self, name: str) -> int:
        """How many of the rightmost batch dims site ``name`` spans: ``max(-dim)`` over its
        plates, 0 for a site outside every plate."""
        return self._depths[name]

    def to_site_layout(self, name: str, value: torch.Tensor, sample_ndim: int) -> torch.Tensor:
        """A trace-layout value of site ``name`` in the site's own layout (see
        :mod:`quivers.shapes`): the batch dims outside its outermost plate are dropped.
        Deterministic sites, whose layout their function chooses, lose only leading
        size-1 dims there."""
        step = self._latent_steps.get(name) or self._steps[name]
        strict = not isinstance(step, Deterministic)
        return to_site_layout(value, sample_ndim, self._batch_ndim, self.site_depth(name), strict=strict)

    def full_batch_shape(self, step: Step) -> torch.Size:
        """Batch shape of a site at full plate sizes (length :attr:`batch_ndim`)."""
        shape = [1] * self._batch_ndim
        for p in step.plates:
            shape[self._batch_ndim + self._plate_dims[p.name]] = self.plate_extent(p, {})
        return torch.Size(shape)

    def set_plate_size(self, name: str, size: int) -> None:
        """Set the global size of a plate (for instance the data module's ``num_data``).

        Raises
        ------
        ModelSpecError
            If the plate is unknown, ``size`` is not a positive int (NaN, infinite,
            fractional, zero or negative), is smaller than the plate's
            ``subsample_size``, or disagrees with an ``obs_mask`` along the plate.
        """
        if name not in self._plates:
            raise ModelSpecError(f"unknown plate {name!r}; plates are {list(self._plates)}")
        p = self._plates[name]
        size = check_size(size, f"set_plate_size: plate {name!r}: size")
        if p.subsample_size is not None and size < p.subsample_size:
            raise ModelSpecError(f"plate {name!r}: size {size} < subsample_size {p.subsample_size}")
        for step in self._steps.values():
            if isinstance(step, Observed) and step.obs_mask is not None and p in step.plates:
                check_obs_mask(step, self._plate_dims, {name: size})
        p.size = size

    def plate_extent(self, plate: Plate, batch: Mapping[str, torch.Tensor]) -> int:
        """Length of a latent site's plate dimension for this batch: the number of
        subsample indices the batch carries, else the plate's size.

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

    def plate_indices(self, plate: Plate, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The indices a step function receives for ``plate``: the batch's subsample
        indices, else ``arange(extent)`` on the batch's device."""
        if plate.name in batch:
            return batch[plate.name]
        return torch.arange(self.plate_extent(plate, batch), device=self.device_of(batch))

    def device_of(self, batch: Mapping[str, Any] | None = None) -> torch.device | None:
        """The device of the batch's tensors, else of the program's parameters and
        buffers; ``None`` (the default device) when neither has one."""
        for v in (batch or {}).values():
            if isinstance(v, torch.Tensor):
                return v.device
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return None

    def param_value(self, name: str) -> torch.Tensor:
        """Constrained value of the learnable :class:`Param` ``name``."""
        return biject_to(self._param_specs[name].constraint)(self._params[name])

    def latent_sites(self) -> list[LatentSiteInfo]:
        """Shapes, supports, plates and priors of the latent sites, found without data.

        Evaluates the latent steps (and the deterministic steps they depend on) once,
        at full plate sizes, under ``torch.no_grad``, each at prior draws of the sites it
        depends on (flat priors use ``biject_to(support)(0)``).

        Raises
        ------
        GuideError
            If a latent site's prior depends on a batch field, or sits in a plate of
            unknown size.
        """
        return discover_latent_sites(self)

    # ------------------------------------------------------------------ batches
    def prepare(self, batch: Mapping[str, Any] | None, subsample: bool = True) -> PreparedBatch:
        """Validate a batch and draw subsample indices for subsampled plates.

        For each plate with ``subsample_size`` whose indices the batch does not carry,
        draws ``subsample_size`` indices without replacement and slices every batch
        field the plate's sites use along the field's dimension for that plate (a field
        holds the batch dims of its sites from their outermost plate, then its event or
        feature dims: rows of an ``(N, D)`` input at dim 0; an ``(N, M)`` field of two
        plates at dims 0 and 1); the indices are stored under the plate's name. A batch
        that already holds a plate's indices is taken to be sliced already (as a data
        loader yields it).

        Parameters
        ----------
        batch : mapping of str to tensor, or None
            Observed values by site name, program inputs by name, plate indices by
            plate name. A latent site's name conditions that site on the given value
            (its trace or site layout, without sample dims), as Pyro's ``condition``.
        subsample : bool
            ``False`` evaluates subsampled plates on the full batch (for prediction).

        Returns
        -------
        PreparedBatch

        Raises
        ------
        BatchError
            On an unknown key, a value that is not a real tensor (a non-numeric or
            complex value), a field on another device than the program's parameters
            and buffers (with validation on), a non-finite value in a float field, an
            empty field, a subsample index out of range, or a field whose length along
            a subsampled plate is not the plate's size.
        """
        return prepare_batch(self, batch, subsample)

    # ------------------------------------------------------------------ evaluation
    def trace(
        self,
        batch: Mapping[str, Any] | None = None,
        values: Mapping[str, torch.Tensor] | None = None,
        sample_shape: torch.Size | tuple[int, ...] | None = None,
        *,
        sample_latent: bool = False,
        sample_observed: bool = False,
        predictive: bool = False,
    ) -> Trace:
        """Run the program, recording every site.

        Parameters
        ----------
        batch : mapping
            Observed values, inputs and plate indices (see :meth:`prepare`).
        values : mapping of str to tensor
            Latent values, trace layout ``sample_shape + batch_shape + event_shape`` (as
            a guide returns them). Values for observed or deterministic sites are not
            allowed.
        sample_shape : torch.Size, optional
            Particle shape. Inferred from ``values`` when omitted (``()`` if empty).
        sample_latent : bool
            Draw latent sites missing from ``values`` from their prior.
        sample_observed : bool
            Draw observed sites missing from the batch.
        predictive : bool
            Draw every observed site, also those in the batch, whose values then only
            fix the plates' extents (posterior predictive: one draw per row given).

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
            A step returning something other than a ``Distribution`` (latent/observed)
            or a log-density tensor (factor).
        ShapeError
            A value, distribution or factor whose shape disagrees with the site's plates.
        SupportError
            An observed value outside its distribution's support.
        """
        return run_trace(self, batch, values, sample_shape, sample_latent, sample_observed, predictive)

    def log_joint(
        self, batch: Mapping[str, Any] | None, values: Mapping[str, torch.Tensor],
        sample_shape: torch.Size | tuple[int, ...] | None = None,
    ) -> torch.Tensor:
        """Scaled log joint density ``log p(data, values)``; shape ``sample_shape``."""
        return self.trace(batch, values, sample_shape).log_joint()

    def sample(
        self, batch: Mapping[str, Any] | None = None, sample_shape: torch.Size | tuple[int, ...] = (),
    ) -> dict[str, torch.Tensor]:
        """Draw every site from the prior (observed values in ``batch`` only size plates).

        Returns
        -------
        dict
            ``{site name: value}`` for latent, observed and deterministic sites, each in
            its own layout: ``sample_shape``, the site's plate dims, its event shape.
        """
        ss = torch.Size(sample_shape)
        with torch.no_grad():
            tr = self.trace(self.prepare(batch, subsample=False), {}, ss, sample_latent=True, predictive=True)
        return {n: self.to_site_layout(n, self.expand_constant(n, s.value, ss), len(ss)) for n, s in tr.items()
                if s.kind in ("latent", "observed", "deterministic")}
