"""``AutoSemiDAIS``: a parametric guide over the global latents and differentiable annealed
importance sampling over the local latents of one subsampled plate (NumPyro's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GuideError
from ..program import MonadicProgram, Plate
from .annealing import HamiltonianAnnealing
from .auto import AutoGuide
from .composite import _augment
from .guide import Batch, Guide, LogProbTerms, Sites
from .initialization import InitFn, check_init_scale, init_to_median
from .normal import AutoNormalGuide
from .registry import LatentRegistry
from .transforms import inv_softplus

__all__ = ["AutoSemiDAIS"]


class AutoSemiDAIS(AutoGuide):
    """Global guide plus per-element DAIS over a plate's local latents, with subsampling
    (NumPyro's ``AutoSemiDAIS``; Jankowiak & Phan 2022; Geffner & Domke 2022, "Variational
    inference with locally enhanced bounds for hierarchical models").

    The global latents ``g`` come from ``global_guide``. Given ``g``, the local latents of
    each element ``i`` of the minibatch (all the latent sites of ``subsample_plate``, their
    unconstrained values flattened into one vector ``l_i`` per element) start from a base
    ``q_0(l_i)`` and take ``K`` steps of uncorrected Hamiltonian annealing towards
    ``p(l_i, x_i | g)`` (:class:`~quivers.guides.annealing.HamiltonianAnnealing`), each
    element independently. The local part of the guide's log-density is the per-element
    extended-space density, so the objectives scale it by ``size / batch rows`` like the
    model's local terms: the ELBO is an unbiased estimate of a locally enhanced bound of
    the log evidence, tighter than the base's, at any subsample size.

    As for :class:`~quivers.guides.AutoDAIS`, :meth:`log_prob` of given values is
    intractable (it raises); draws cost ``K`` gradients of the plate's log-density.

    Parameters
    ----------
    model : MonadicProgram
        The model.
    global_guide : Guide, optional
        A guide covering exactly the latent sites outside the plate. Default: an
        :class:`AutoNormalGuide` over them when there are any.
    local_guide : Guide, optional
        The base ``q_0`` of the local sites: a reparameterised guide covering exactly the
        plate's latent sites whose ``log_prob`` factorises over the plate's elements
        (``AutoNormalGuide``, an amortised encoder). Default: a Normal per element and
        coordinate, locations from ``init_loc_fn``, scales ``init_scale`` (parameters
        ``local_loc`` and ``local_scale_raw``, shape ``(plate size, D_local)``).
    subsample_plate : str, optional
        The plate of the local latents. Default: the one plate with ``subsample_size``
        or, when no plate sets one, the one plate that holds latent sites.
    K, eta_init, eta_max, gamma_init
        As :class:`~quivers.guides.AutoDAIS`.
    init_scale : float
        Initial scale of the default local base (default 0.1).
    use_global_dais_params : bool
        Share the step size, damping, schedule and mass across the plate's elements
        (``True``) or learn them per element (``False``, default, as NumPyro).
    init_loc_fn : callable or str
        Init strategy of the default local base and global guide (default
        :func:`init_to_median`).
    learn_mass : bool
        As :class:`~quivers.guides.AutoDAIS` (default ``False``: the mass is 1).

    Raises
    ------
    GuideError
        If no single plate qualifies (none, or several subsample), the plate holds no
        latent site, a global site depends on a local one, a guide covers other sites
        than its part, a local site's support depends on another local site, or on a bad
        ``K``, ``eta_init``, ``eta_max``, ``gamma_init`` or ``init_scale``.
    """

    def __init__(
        self,
        model: MonadicProgram,
        global_guide: Guide | None = None,
        local_guide: Guide | None = None,
        subsample_plate: str | None = None,
        K: int = 4,
        eta_init: float = 0.01,
        eta_max: float = 0.1,
        gamma_init: float = 0.9,
        init_scale: float = 0.1,
        use_global_dais_params: bool = False,
        init_loc_fn: InitFn | str = init_to_median,
        learn_mass: bool = False,
    ) -> None:
        init_scale = check_init_scale(init_scale)
        super().__init__(model, None, init_loc_fn)
        self.plate = _local_plate(model, self.registry, subsample_plate)
        local = [s.name for s in self.registry if any(p.name == self.plate.name for p in s.plates)]
        if not local:
            raise GuideError(f"AutoSemiDAIS: there are no local latent sites in plate {self.plate.name!r}; "
                             "it is for models with local latents (use AutoDAIS or AutoSurrogateLikelihoodDAIS)")
        globals_ = [n for n in self.registry.names if n not in local]
        for n in globals_:
            bad = sorted(set(model.ancestors(n)) & set(local))
            if bad:
                raise GuideError(f"AutoSemiDAIS: global site {n!r} depends on the local sites {bad} of plate "
                                 f"{self.plate.name!r}; the local annealing needs them to be downstream")
        self.local_names, self.global_names = local, globals_
        self.local_registry = LatentRegistry(model, exclude=globals_ + list(model.observed_names))
        for s in self.local_registry:
            if s.dynamic and set(model.ancestors(s.name)) & set(local):
                raise GuideError(f"AutoSemiDAIS: the support of local site {s.name!r} depends on another local site")
        if global_guide is None and globals_:
            global_guide = AutoNormalGuide(model, observed_names=local, init_loc_fn=init_loc_fn)
        _check_covers(global_guide, globals_, "global_guide")
        _check_covers(local_guide, local, "local_guide")
        self.global_guide = global_guide
        self.local_guide = local_guide
        self._layout = [(s, s.plate_dims[self.plate.name]) for s in self.local_registry]
        self.local_dim = sum(s.numel for s in self.local_registry) // self.plate.size
        if local_guide is None:
            init = self._pack(self._init_unconstrained_local(), torch.Size()).detach()
            self.local_loc = nn.Parameter(init.clone())
            self.local_scale_raw = nn.Parameter(torch.full_like(init, float(inv_softplus(init_scale))))
        ref = next(self.parameters(), None)  # the local base's, else the given guides': their dtype
        self.annealing = HamiltonianAnnealing(K, self.local_dim, eta_init, eta_max, gamma_init, learn_mass,
                                              None if use_global_dais_params else self.plate.size,
                                              dtype=None if ref is None else ref.dtype)

    @property
    def K(self) -> int:
        """Number of annealing steps."""
        return self.annealing.K

    # ------------------------------------------------------------------ per-element packing
    def _init_unconstrained_local(self) -> dict[str, torch.Tensor]:
        u = self._init_unconstrained()
        return {n: u[n] for n in self.local_names}

    def _pack(self, u: Mapping[str, torch.Tensor], ss: torch.Size) -> torch.Tensor:
        """Per-site unconstrained local values (``ss + unconstrained shape``, the plate's
        rows at its dim) to ``ss + (rows, D_local)``."""
        n = len(ss)
        parts = [u[s.name].movedim(d, n) for s, d in self._layout]
        return torch.cat([p.reshape(p.shape[:n + 1] + (-1,)) for p in parts], -1)

    def _unpack(self, flat: torch.Tensor, ss: torch.Size) -> dict[str, torch.Tensor]:
        """The inverse of :meth:`_pack`."""
        n = len(ss)
        out, start = {}, 0
        rows = flat.shape[n]
        for s, d in self._layout:
            rest = list(s.unconstrained_shape)
            del rest[d]
            width = int(torch.Size(rest).numel())
            part = flat[..., start:start + width].reshape(flat.shape[:n] + (rows,) + tuple(rest))
            out[s.name] = part.movedim(n, d)
            start += width
        return out

    # ------------------------------------------------------------------ densities
    def _local_base(self, batch: Mapping[str, Any], ss: torch.Size, idx: torch.Tensor):
        """A draw ``l_0`` (``ss + (rows, D_local)``), ``log q_0(l_0)`` (``ss``) and
        ``l -> log q_0(l)`` (summed over rows)."""
        if self.local_guide is None:
            loc = self.local_loc.index_select(0, idx)
            scale = F.softplus(self.local_scale_raw.index_select(0, idx))
            l0 = torch.distributions.Normal(loc, scale).rsample(ss)

            def log_q(x: torch.Tensor) -> torch.Tensor:  # built at each call: the chain turns argument checks off
                return torch.distributions.Normal(loc, scale).log_prob(x).flatten(len(ss)).sum(-1)

            return l0, log_q(l0), log_q
        z, terms = self.local_guide.rsample_and_log_prob_terms(batch, ss)
        u, log_det = self.local_registry.unconstrain(z, batch)
        l0 = self._pack(u, ss)

        def log_q(x: torch.Tensor) -> torch.Tensor:
            values, ld = self.local_registry.constrain(self._unpack(x, ss), batch, ss)
            return sum(self.local_guide.log_prob_terms(batch, values).values()) + sum(ld.values())

        return l0, sum(terms.values()) + sum(log_det.values()), log_q

    def _local_log_joint(self, batch: Mapping[str, Any], given: Mapping[str, Any], ss: torch.Size,
                         global_values: Sites):
        """``l -> sum_i log p(l_i, x_i | g) + log|det J|``: the plate's sites, unscaled."""
        plate = self.plate.name

        def log_p(x: torch.Tensor) -> torch.Tensor:
            values, log_det = self.local_registry.constrain(self._unpack(x, ss), given, ss)
            tr = self.model.trace(batch, {**global_values, **values}, ss)
            total = sum(log_det.values())
            for site in tr.values():
                if site.log_prob is not None and plate in site.plates:
                    total = total + site.log_prob / site.scale
            return total

        return log_p

    # ------------------------------------------------------------------ Guide API
    def rsample_and_log_prob_terms(
        self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = (),
    ) -> tuple[Sites, LogProbTerms]:
        batch = self._prepare(batch)
        ss = torch.Size(sample_shape)
        values: Sites = {}
        terms: LogProbTerms = {}
        if self.global_guide is not None:
            values, terms = self.global_guide.rsample_and_log_prob_terms(batch, ss)
            terms = dict(terms)
        given = _augment(batch, values)  # the locals' annealing conditions on the globals' draws
        idx = self.model.plate_indices(self.plate, batch)
        l0, log_q0, log_base = self._local_base(given, ss, idx)
        l_k, log_factor = self.annealing(l0, log_base, self._local_log_joint(batch, given, ss, values), idx,
                                         rows=True)
        local, log_det = self.local_registry.constrain(self._unpack(l_k, ss), given, ss)
        values = {**values, **local}
        terms[tuple(self.local_names)] = log_q0 + log_factor - sum(log_det.values())
        return {n: values[n] for n in self.registry.names}, terms

    def log_prob_terms(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> LogProbTerms:
        """Not available: the density of the annealed local draws is intractable.

        Raises
        ------
        GuideError
            Always (see :meth:`~quivers.guides.AutoDAIS.log_prob_terms`).
        """
        raise GuideError(
            "AutoSemiDAIS has no tractable log_prob of given values (the annealed chain's marginal); use objectives "
            "that draw from the guide (Trace_ELBO, RenyiELBO), not Trace_ELBO(stl=True)")


def _local_plate(model: MonadicProgram, registry: LatentRegistry, name: str | None) -> Plate:
    """The plate of the local latents (see ``subsample_plate``)."""
    plates = model.plates
    if name is not None:
        if name not in plates:
            raise GuideError(f"AutoSemiDAIS: subsample_plate={name!r} is not a plate of {type(model).__name__} "
                             f"(plates: {list(plates)})")
        return plates[name]
    found = [p for p in plates.values() if p.subsample_size is not None]
    if not found:
        used = {p.name for s in registry for p in s.plates}
        found = [p for p in plates.values() if p.name in used]
    if len(found) != 1:
        raise GuideError(
            f"AutoSemiDAIS assumes that the model contains exactly 1 plate with data subsampling, found "
            f"{[p.name for p in found]}; pass subsample_plate= to choose one")
    return found[0]


def _check_covers(guide: Guide | None, names: list[str], what: str) -> None:
    if guide is None:
        return
    if not isinstance(guide, Guide):
        raise GuideError(f"AutoSemiDAIS: {what} must be a Guide, got {type(guide).__name__}")
    if sorted(guide.latent_names) != sorted(names):
        raise GuideError(f"AutoSemiDAIS: {what} covers {sorted(guide.latent_names)}, expected exactly {sorted(names)}")
    if not guide.has_rsample:
        raise GuideError(f"AutoSemiDAIS: {what} must be reparameterised ({type(guide).__name__} is not)")

