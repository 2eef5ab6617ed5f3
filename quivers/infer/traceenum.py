"""``TraceEnum_ELBO``: the ELBO with discrete latent sites summed out exactly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..errors import ConfigError, GuideError
from ..guides.composite import AutoGuideList
from ..guides.guide import Guide, LogProbTerms
from ..program import MonadicProgram
from ..program.enumeration import EnumPlan, enumerated_names
from .elbo import ELBO, scaled_log_q
from .enumerated import _PLANS, enumerated_model_log_density, enumeration_plan

__all__ = ["TraceEnum_ELBO"]


def _nonreparameterised(guide: Guide) -> set[str]:
    if isinstance(guide, AutoGuideList):
        return set().union(*(_nonreparameterised(p) for p in guide.parts))
    return set() if guide.has_rsample else set(guide.latent_names)


def _split_guide(model: MonadicProgram, guide: Guide,
                 batch: Mapping[str, Any]) -> tuple[EnumPlan, dict[str, torch.Tensor]]:
    """The plan for this model and guide, and the guide's enumerated ``log q``."""
    qlog = guide.enumerated_log_probs(batch)
    covered = set(guide.latent_names)
    marked = enumerated_names(model)
    guide_sites = tuple(n for n in model.latent_names if n in qlog)
    model_sites = tuple(n for n in marked if n not in covered)
    key = ("split", frozenset(covered), frozenset(qlog), tuple(marked))
    plans = _PLANS.setdefault(model, {})
    if key in plans:
        return plans[key], qlog
    sampled = _nonreparameterised(guide) - set(qlog)
    if sampled:
        raise GuideError(
            f"TraceEnum_ELBO: {type(guide).__name__} samples {sorted(sampled)} without reparameterisation; "
            "enumerate discrete sites (in the model with enumerate='parallel' / config_enumerate, or in the guide "
            "with AutoDiscreteParallel) and guide the continuous ones with reparameterised guides"
        )
    left = [i.name for i in model.latent_sites()
            if i.is_discrete and i.name not in covered and i.name not in marked]
    if left:
        raise GuideError(
            f"TraceEnum_ELBO: discrete latent site(s) {left} are neither enumerated nor covered by the guide; mark "
            "them with Latent(..., enumerate='parallel') or config_enumerate(model), or add AutoDiscreteParallel"
        )
    plans[key] = enumeration_plan(model, model_sites, guide_sites)
    return plans[key], qlog


class TraceEnum_ELBO(ELBO):
    """The ELBO with discrete latent sites enumerated exactly (Pyro's ``TraceEnum_ELBO``).

    Sites marked ``enumerate="parallel"`` (or by :func:`~quivers.program.config_enumerate`)
    that the guide does not cover are summed out of the model:
    ``log p(x, z) = log sum_{z_enum} p(x, z, z_enum)`` at the guide's draws of the
    continuous sites ``z``, by tensor variable elimination over the plates (Obermeyer et
    al. 2019; :mod:`quivers.infer.contract`): exact, with a cost polynomial in the number
    of enumerated sites of a tree-structured model and ``O(T K^2)`` for a
    :class:`~quivers.program.Markov` chain of length ``T``. Sites the guide enumerates
    (:class:`~quivers.guides.AutoDiscreteParallel`) enter as exact expectations under the
    guide's probabilities. Continuous sites keep the reparameterised estimator; particles
    are vectorised; a subsampled plate scales each element's (already summed-out) term by
    ``size / rows``.

    Parameters
    ----------
    num_particles, vectorize_particles
        See :class:`ELBO`.
    max_plate_nesting : int, optional
        Accepted for Pyro's signature. quivers knows the plate nesting from the
        declaration, so it is only checked: it must be at least the model's
        ``batch_ndim``.

    Raises
    ------
    ConfigError
        If ``max_plate_nesting`` is negative, or, at the first step, smaller than the
        model's plate nesting.
    GuideError
        At the first step, if a discrete site is neither enumerated nor covered by the
        guide, or the guide samples a site without reparameterisation.
    ModelSpecError
        At the first step, if the plated factor graph of the enumerated sites is not a
        tree (see :func:`~quivers.infer.contract.plan_contraction`).
    """

    def __init__(self, num_particles: int = 1, vectorize_particles: bool = True,
                 max_plate_nesting: int | None = None) -> None:
        super().__init__(num_particles, vectorize_particles)
        if max_plate_nesting is not None and (int(max_plate_nesting) != max_plate_nesting or max_plate_nesting < 0):
            raise ConfigError(
                f"TraceEnum_ELBO: max_plate_nesting must be a non-negative int, got {max_plate_nesting!r}")
        self.max_plate_nesting = max_plate_nesting

    def _particles(self, model: MonadicProgram, guide: Guide, batch: Mapping[str, Any], ss: torch.Size) -> torch.Tensor:
        if self.max_plate_nesting is not None and self.max_plate_nesting < model.batch_ndim:
            raise ConfigError(f"TraceEnum_ELBO: max_plate_nesting={self.max_plate_nesting}, but "
                              f"{type(model).__name__} nests {model.batch_ndim} plate dim(s)")
        plan, qlog = _split_guide(model, guide, batch)
        z, terms = guide.rsample_and_log_prob_terms(batch, ss)
        z = {k: v for k, v in z.items() if k not in qlog}
        log_p, tr = enumerated_model_log_density(model, plan, batch, z, ss, qlog)
        return log_p - scaled_log_q(tr, _continuous_terms(terms, qlog, guide), guide)


def _continuous_terms(terms: LogProbTerms, enumerated: Mapping[str, torch.Tensor], guide: Guide) -> LogProbTerms:
    out: LogProbTerms = {}
    for names, lq in terms.items():
        inside = [n for n in names if n in enumerated]
        if not inside:
            out[names] = lq
        elif len(inside) != len(names):
            raise GuideError(f"{type(guide).__name__}.log_prob_terms gives one term for enumerated sites {inside} and "
                             f"sampled ones {[n for n in names if n not in enumerated]}; split it per site group")
    return out
