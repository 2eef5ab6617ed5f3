"""``TraceGraph_ELBO``: score-function gradients with Rao-Blackwellisation and baselines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, GuideError
from ..guides.guide import Guide
from ..program import MonadicProgram
from ..program.enumeration import enumerated_names, trace_enumerated
from .contract import contract
from .elbo import ELBO, scaled_log_q
from .enumerated import enumeration_plan

__all__ = ["TraceGraph_ELBO"]


class TraceGraph_ELBO(ELBO):
    """The ELBO with score-function gradients for sites the guide samples without
    reparameterisation (Pyro's ``TraceGraph_ELBO``; Ranganath, Gerrish & Blei 2014,
    "Black Box Variational Inference"; Schulman et al. 2015, "Gradient estimation using
    stochastic computation graphs").

    For each non-reparameterised guide site ``s`` the surrogate adds
    ``sum_i log q(z_s,i) * stop_grad(cost_s,i - b_s,i)`` where ``cost_s,i`` is only the part
    of ``log p - log q`` that depends on ``z_s,i`` (**Rao-Blackwellisation**): the model's
    terms of the sites that read ``z_s`` (its prior, its children; through deterministic
    steps), per element ``i`` of ``s``'s plates where those sites share them, and
    ``-log q(z_s,i)``. Terms that do not depend on ``z_s`` have zero expected contribution
    to its score, so dropping them keeps the estimator unbiased and lowers its variance.
    ``b_s`` is a **baseline**: a decaying average of the cost (default), or a user
    ``nn.Module`` per site, ``baselines={"site": net}`` with ``net(batch)`` broadcasting to
    the site's per-element shape, trained jointly by regression on the cost (its squared
    error is added to the loss, with zero value). Reparameterised sites keep the pathwise
    gradient.

    Rao-Blackwellisation needs the guide's per-site factors
    (:meth:`~quivers.guides.Guide.site_posteriors`: mean-field guides,
    :class:`~quivers.guides.AutoDiscreteParallel`, an ``AutoGuideList`` of them); for other
    non-reparameterised guides the score of the whole guide multiplies the whole cost
    (with the baseline), as in :class:`Trace_ELBO`.

    Parameters
    ----------
    num_particles, vectorize_particles
        See :class:`ELBO`.
    baseline_beta : float
        Decay of the average baseline, in ``[0, 1)`` (Pyro's ``baseline_beta``, 0.9); 0
        turns the average baseline off.
    baselines : mapping of str to nn.Module, optional
        Learned baselines by site (Pyro's ``baseline_net``); registered as submodules, so
        ``SVI``'s and ``SVIModule``'s default optimizers train them.

    Raises
    ------
    ConfigError
        If ``baseline_beta`` is outside ``[0, 1)`` or ``baselines`` holds something that is
        not an ``nn.Module``.
    GuideError
        At the first step, if a ``baselines`` key is not a non-reparameterised site of the
        guide, or the model has enumerated sites the guide does not cover (use
        :class:`~quivers.infer.TraceEnum_ELBO`).
    """

    def __init__(self, num_particles: int = 1, vectorize_particles: bool = True, baseline_beta: float = 0.9,
                 baselines: Mapping[str, nn.Module] | None = None) -> None:
        super().__init__(num_particles, vectorize_particles)
        if not (isinstance(baseline_beta, (int, float)) and 0.0 <= baseline_beta < 1.0):
            raise ConfigError(f"TraceGraph_ELBO: baseline_beta must be in [0, 1), got {baseline_beta!r}")
        for k, v in (baselines or {}).items():
            if not isinstance(v, nn.Module):
                raise ConfigError(f"TraceGraph_ELBO: baselines[{k!r}] is a {type(v).__name__}, not an nn.Module")
        self.baseline_beta = float(baseline_beta)
        self.baselines = nn.ModuleDict(dict(baselines or {}))
        self._average: dict[str, torch.Tensor] = {}

    def _baseline(self, name: str, cost: torch.Tensor, batch: Mapping[str, Any]) -> tuple[Any, Any]:
        """The baseline for ``cost`` and the regression loss that trains a learned one."""
        if name in self.baselines:
            b = self.baselines[name](batch)
            return b.detach(), (b - cost.detach()).square().sum()
        if self.baseline_beta == 0.0:
            return 0.0, 0.0
        old = self._average.get(name)
        mean = cost.detach().mean()
        new = mean if old is None else self.baseline_beta * old + (1.0 - self.baseline_beta) * mean
        self._average[name] = new
        return (old if old is not None else 0.0), 0.0

    def _particles(self, model: MonadicProgram, guide: Guide, batch: Mapping[str, Any], ss: torch.Size) -> torch.Tensor:
        left = [n for n in enumerated_names(model) if n not in guide.latent_names]
        if left:
            raise GuideError(f"TraceGraph_ELBO: the guide leaves the enumerated sites {left} to the model; use "
                             "TraceEnum_ELBO to sum them out")
        dists = guide.site_posteriors(batch)
        if dists is not None:
            sampled = [n for n, d in dists.items() if not d.has_rsample]
        else:
            sampled = [] if guide.has_rsample else list(guide.latent_names)
        unknown = [k for k in self.baselines if k not in sampled]
        if unknown:
            raise GuideError(f"TraceGraph_ELBO: baselines for {unknown}, which are not non-reparameterised sites of "
                             f"{type(guide).__name__} (those are {sampled})")
        z = guide.rsample(batch, ss)
        z = {k: v.detach() if k in sampled else v for k, v in z.items()}
        terms = guide.log_prob_terms(batch, z)
        plan = enumeration_plan(model, (), ())
        tr, model_terms, layout = trace_enumerated(model, plan, batch, z, ss)
        elbo = contract(plan, model_terms, layout) - scaled_log_q(tr, terms, guide)
        if not sampled:
            return elbo
        if dists is None:  # no per-site factors: the whole guide's score times the whole cost
            log_q = scaled_log_q(tr, terms, guide)
            b, fit = self._baseline("__guide__", elbo, batch)
            surrogate = log_q * (elbo - b).detach() + fit
            return elbo + surrogate - surrogate.detach()
        readers: dict[str, set[str]] = {}
        for reader, reads in plan.reads.items():
            for site in reads:
                readers.setdefault(site, set()).add(reader)
        s_dims = len(ss)
        surrogate: torch.Tensor | float = 0.0
        for name in sampled:
            score = dists[name].log_prob(z[name])
            score = score.reshape(ss + (1,) * (s_dims + model.batch_ndim - score.dim()) + score.shape[s_dims:])
            keep = set(range(s_dims)) | {layout.plate_pos[p.name] for p in model.site_plates(name)}
            cost = -score.detach() * tr[name].scale
            for term in model_terms:
                if term.name in readers.get(name, ()):
                    t = term.tensor * tr[term.name].scale
                    drop = [d for d in range(t.dim()) if d not in keep and t.shape[d] > 1]
                    cost = cost + (t.sum(drop, keepdim=True) if drop else t)
            b, fit = self._baseline(name, cost, batch)
            part = (score * (cost - b).detach()).reshape(ss + (-1,)).sum(-1)
            surrogate = surrogate + part + fit
        return elbo + surrogate - surrogate.detach()  # type: ignore[operator]
