"""The model's log-density with its enumerated sites summed out, for every objective.

Sites marked ``enumerate="parallel"`` that the guide does not cover are summed out of the
model wherever a log-density ``log p(x, z)`` at the guide's draws is needed: the ELBO
family (:func:`~quivers.infer.elbo.weighted_draws`), the Renyi bounds, the PSIS
diagnostic, the Laplace warm start's MAP search. The plan (dims, contraction order) is
built once per model and set of sites.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import GuideError
from ..program import MonadicProgram, Trace
from ..program.enumeration import EnumPlan, EnumTerm, enumerated_names, trace_enumerated
from .contract import contract

__all__ = ["enumeration_plan", "enumerated_model_log_density", "model_log_density"]

_PLANS: weakref.WeakKeyDictionary[MonadicProgram, dict[Any, EnumPlan]] = weakref.WeakKeyDictionary()


def enumeration_plan(model: MonadicProgram, model_sites: tuple[str, ...], guide_sites: tuple[str, ...]) -> EnumPlan:
    """The model's :class:`~quivers.program.EnumPlan` for these sites, built once and kept."""
    plans = _PLANS.setdefault(model, {})
    key = (model_sites, guide_sites)
    if key not in plans:
        plans[key] = EnumPlan(model, model_sites, guide_sites)
    return plans[key]


def enumerated_model_log_density(model: MonadicProgram, plan: EnumPlan, batch: Mapping[str, Any],
                                 values: Mapping[str, torch.Tensor], sample_shape: torch.Size,
                                 guide_log_probs: Mapping[str, torch.Tensor] | None = None
                                 ) -> tuple[torch.Tensor, Trace]:
    """``log sum_{z_enum} p(x, z_enum, z)`` at continuous ``values`` (shape ``sample_shape``),
    with guide-enumerated sites' expectations (and ``-log q`` terms) taken; returns it
    with the run's trace (for subsample scales)."""
    tr, terms, layout = trace_enumerated(model, plan, batch, values, sample_shape)
    full: dict[str, torch.Tensor] = {}
    e, s = plan.num_dims, len(sample_shape)
    for g, lq in (guide_log_probs or {}).items():
        var = plan.vars[g]
        if lq.dim() != model.batch_ndim + 1 or lq.shape[-1] != var.size:
            raise GuideError(
                f"enumerated_log_probs()[{g!r}] has shape {tuple(lq.shape)}; expected batch_shape (length "
                f"{model.batch_ndim}) + ({var.size},)"
            )
        lq = lq.movedim(-1, 0)
        lq = lq.reshape((1,) * var.dim + (var.size,) + (1,) * (e - var.dim - 1 + s) + tuple(lq.shape[1:]))
        full[g] = lq
        terms.append(EnumTerm(f"{g}/guide", var.plates, frozenset({g}), -lq))
    return contract(plan, terms, layout, full), tr


def model_log_density(model: MonadicProgram, batch: Mapping[str, Any], values: Mapping[str, torch.Tensor],
                      sample_shape: torch.Size) -> tuple[torch.Tensor, Trace]:
    """``log p(x, z)`` at latent ``values`` (shape ``sample_shape``) with the enumerated
    sites that ``values`` does not give summed out, and the run's trace (for subsample
    scales; under enumeration its ``log_prob`` entries are unreduced)."""
    summed = tuple(n for n in enumerated_names(model) if n not in values)
    if not summed:
        tr = model.trace(batch, values, sample_shape)
        return tr.log_joint(), tr
    return enumerated_model_log_density(model, enumeration_plan(model, summed, ()), batch, values, sample_shape)
