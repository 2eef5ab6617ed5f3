"""``infer_discrete``: the enumerated sites' MAP assignment or posterior draws given the
continuous sites (Pyro's ``infer_discrete``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.distributions import Categorical

from ..errors import ConfigError, GuideError
from ..guides.guide import Guide, Sites
from ..program import MonadicProgram
from ..program.enumeration import EnumVar, trace_enumerated
from ..program.markov import Markov
from ..validation import check_positive_int
from .contract import Record, contract
from .enumerated import enumeration_plan

__all__ = ["infer_discrete"]


def _condition(x: torch.Tensor, var: EnumVar, chosen: Mapping[str, tuple[EnumVar, torch.Tensor]],
               num_enum: int) -> torch.Tensor:
    """``x`` at the chosen values of every other enumerated site whose dims it spans."""
    for u, idx in chosen.values():
        if u.name == var.name:
            continue
        for d in u.dims:
            if d < num_enum and x.shape[d] > 1:
                if d != u.dim:  # pragma: no cover - a chain's previous state is consumed by its own elimination
                    raise AssertionError("unexpected previous-state dim")
                shape = list(x.shape)
                shape[d] = 1
                x = x.gather(d, idx.expand(shape))
    return x


def _choose(logits: torch.Tensor, dim: int, temperature: int) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(dim, keepdim=True)
    return Categorical(logits=logits.movedim(dim, -1)).sample().unsqueeze(dim)


def _chain(x: torch.Tensor, temperature: int) -> torch.Tensor:
    """Forward filtering then backward sampling (``temperature=1``) or Viterbi
    (``temperature=0``) over a chain's ``(..., T, K, K)`` terms; returns ``(..., T)``."""
    t_len = x.shape[-3]
    alphas = [x[..., 0, 0, :]]
    for t in range(1, t_len):
        s = alphas[-1].unsqueeze(-1) + x[..., t, :, :]
        alphas.append(s.amax(-2) if temperature == 0 else torch.logsumexp(s, -2))
    states = [_choose(alphas[-1], -1, temperature)]
    for t in range(t_len - 2, -1, -1):
        nxt = states[-1]
        trans = x[..., t + 1, :, :].gather(-1, nxt.unsqueeze(-2).expand(x.shape[:-3] + (x.shape[-1], 1))).squeeze(-1)
        states.append(_choose(alphas[t] + trans, -1, temperature))
    return torch.cat(states[::-1], -1)


@torch.no_grad()
def infer_discrete(model: MonadicProgram, guide: Guide | None = None, batch: Mapping[str, Any] | None = None,
                   temperature: int = 1, num_samples: int = 1,
                   values: Mapping[str, torch.Tensor] | None = None) -> Sites:
    """The enumerated discrete sites given the continuous ones: the joint MAP assignment
    (``temperature=0``: max-product elimination then backtracking, Viterbi for a Markov
    chain) or exact posterior draws (``temperature=1``: sum-product elimination then
    backward sampling, forward-filter backward-sample for a chain), as Pyro's
    ``infer_discrete``.

    Every discrete site with finite support that ``values`` does not give is inferred:
    sites marked for enumeration and sites a guide enumerates
    (:class:`~quivers.guides.AutoDiscreteParallel`) alike. The continuous sites are
    ``values`` when given, else ``num_samples`` draws from ``guide``.

    Parameters
    ----------
    model : MonadicProgram
        The model.
    guide : Guide, optional
        Source of the continuous sites' draws (needed unless ``values`` gives them).
    batch : mapping, optional
        The data (every plate at full size: no subsampling).
    temperature : {0, 1}
        0 for the MAP assignment, 1 for posterior draws.
    num_samples : int
        Number of draws of the continuous sites (and of the discrete ones given each).
    values : mapping, optional
        Continuous (and any fixed discrete) sites' values, each of shape
        ``(num_samples,) + site shape`` (site or trace layout).

    Returns
    -------
    dict of str to torch.Tensor
        Every latent site, in its site layout with a leading ``(num_samples,)``: the
        continuous values used and the discrete ones inferred (values of the support,
        as the site's distribution gives them).

    Raises
    ------
    ConfigError
        If ``temperature`` is not 0 or 1 or ``num_samples`` is not a positive int.
    GuideError
        If neither ``guide`` nor ``values`` gives the continuous sites, or no site is
        left to infer.
    """
    if temperature not in (0, 1):
        raise ConfigError(f"infer_discrete: temperature must be 0 (MAP) or 1 (posterior draws), got {temperature!r}")
    n = check_positive_int(num_samples, "num_samples", ConfigError)
    prepared = model.prepare(batch, subsample=False)
    ss = torch.Size((n,))
    if values is None:
        if guide is None:
            raise GuideError("infer_discrete: pass a guide (or values) for the continuous sites")
        drawn = guide.rsample(prepared, ss)
        enumerated = guide.enumerated_log_probs(prepared)
        values = {k: v for k, v in drawn.items() if k not in enumerated}
    infos = {i.name: i for i in model.latent_sites()}
    sites = tuple(name for name, i in infos.items() if name not in values and i.is_discrete
                  and (i.prior.has_enumerate_support or isinstance(model.latent_step(name), Markov)))
    if not sites:
        raise GuideError(f"infer_discrete: {type(model).__name__} has no discrete site left to infer")
    plan = enumeration_plan(model, sites, ())
    tr, terms, layout = trace_enumerated(model, plan, prepared, values, ss)
    record = Record()
    contract(plan, terms, layout, maximise=temperature == 0, record=record)
    e = plan.num_dims
    chosen: dict[str, tuple[EnumVar, torch.Tensor]] = {}
    for var, x in reversed(record.steps):
        if var.along is None:
            x = _condition(x, var, chosen, e)
            idx = _choose(x, var.dim, temperature)
        else:
            t_pos = layout.plate_pos[var.along]
            moved = _condition(x.movedim((-3, -2, -1), (t_pos, var.prev_dim, var.dim)), var, chosen, e)
            z = _chain(moved.movedim((t_pos, var.prev_dim, var.dim), (-3, -2, -1)), temperature)
            idx = z.unsqueeze(-1).unsqueeze(-1).movedim((-3, -2, -1), (t_pos, var.prev_dim, var.dim))
        chosen[var.name] = (var, idx)
    out: Sites = {}
    for name in model.latent_names:
        if name in chosen:
            var, idx = chosen[name]
            support = tr[name].value.reshape(-1)
            v = support[idx.reshape(idx.shape[e:])]
            v = v.expand(ss + v.shape[1:]) if v.shape[0] != n else v
            out[name] = model.to_site_layout(name, v, 1)
        elif name in values:
            out[name] = model.to_site_layout(name, values[name], 1)
    return out

