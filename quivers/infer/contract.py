"""Tensor variable elimination over plates (Obermeyer et al. 2019, "Tensor variable
elimination for plated factor graphs").

The log-density terms of an enumerated model (:func:`quivers.program.trace_enumerated`)
are contracted to one value per particle:

* plates are processed from the deepest out; at each plate set (a *leaf*), the model's
  enumerated sites local to it are summed out one at a time (log-sum-exp; the site whose
  elimination makes the smallest tensor first, a greedy order that is polynomial for
  tree-structured models), a Markov chain along one of its plates by the forward algorithm
  (a parallel scan of ``K x K`` log-matrix products over time), and sites the guide
  enumerates by their expectation under the guide's probabilities (each term
  separately: an expectation is linear);
* each remaining term is then summed over the plates its remaining sites do not sit in
  (a product over those plates of independent factors), scaled by ``size / rows`` for
  a subsampled plate, and handed to the enclosing plate set.

The order of operations depends only on the model's structure, so it is planned once per
structure (:func:`plan_contraction`) and replayed on each step's tensors. A semiring
switch gives the max-product version (Viterbi) used by ``infer_discrete``, which can also
record each elimination for backward sampling.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ModelSpecError
from ..program.enumeration import EnumPlan, EnumTerm, EnumVar, Layout

__all__ = ["plan_contraction", "contract", "Record", "chain_product"]

Instruction = tuple[Any, ...]


@dataclass
class Record:
    """What ``contract(..., record=True)`` keeps for backward sampling: each eliminated
    model site with the tensor it was eliminated from, in elimination order."""

    steps: list[tuple[EnumVar, torch.Tensor]] = field(default_factory=list)


def plan_contraction(plan: EnumPlan, terms: Sequence[tuple[frozenset[str], frozenset[str]]]) -> list[Instruction]:
    """The contraction program for terms of the given ``(plates, vars)``, cached in
    ``plan.contractions``.

    Raises
    ------
    ModelSpecError
        If the plated factor graph is not a tree (a term joins enumerated sites of two
        plates neither of which contains the other), two Markov chains along the same
        plate share a term, or a site the guide enumerates shares a term with a model
        site summed out in an enclosing plate or a Markov chain (the expectation of a
        log-sum-exp has no exact linear form).
    """
    key = tuple(terms)
    cached = plan.contractions.get(key)
    if cached is not None:
        return cached
    evars = plan.vars
    info: dict[int, tuple[frozenset[str], frozenset[str]]] = dict(enumerate(terms))
    tree: dict[frozenset[str], list[int]] = defaultdict(list)
    for i, (plates, _) in info.items():
        tree[plates].append(i)
    prog: list[Instruction] = []
    counter = [len(terms)]

    def new(plates: frozenset[str], vs: frozenset[str]) -> int:
        i = counter[0]
        counter[0] += 1
        info[i] = (plates, vs)
        return i

    def union(ids: Sequence[int]) -> frozenset[str]:
        return frozenset().union(*(info[i][1] for i in ids))

    while tree:
        leaf = max(tree, key=lambda o: (len(o), sorted(o)))
        ids = tree.pop(leaf)
        present = union(ids)
        model_local = sorted(v for v in present if evars[v].plates == leaf and not evars[v].in_guide
                             and evars[v].along is None)
        while model_local:
            def cost(v: str) -> tuple[int, str]:
                vs = union([i for i in ids if v in info[i][1]]) - {v}
                return math.prod(evars[u].size ** len(evars[u].dims) for u in vs), v
            v = min(model_local, key=cost)
            model_local.remove(v)
            used = [i for i in ids if v in info[i][1]]
            out = new(leaf, union(used) - {v})
            prog.append(("elim", out, v, used))
            ids = [i for i in ids if i not in used] + [out]
        for m in sorted(v for v in present if evars[v].along is not None and evars[v].plates == leaf):
            used = [i for i in ids if m in info[i][1]]
            joined = union(used) - {m}
            clash = [u for u in joined if evars[u].plates == leaf]
            if clash:
                raise ModelSpecError(f"Markov site {m!r} shares a term with enumerated site(s) {clash} of the same "
                                     "plates; combine the chains into one chain over the joint state")
            guided = [u for u in joined if evars[u].in_guide]
            if guided:
                raise ModelSpecError(f"Markov site {m!r} shares a term with {guided}, which the guide enumerates; "
                                     "enumerate them in the model")
            out = new(leaf - {evars[m].along}, joined)
            prog.append(("markov", out, m, used))
            ids = [i for i in ids if i not in used]
            tree[leaf - {evars[m].along}].append(out)
        for g in sorted(v for v in present if evars[v].in_guide and evars[v].plates == leaf):
            for i in [i for i in ids if g in info[i][1]]:
                outer = [u for u in info[i][1] if not evars[u].in_guide]
                if outer:
                    raise ModelSpecError(
                        f"site {g!r}, which the guide enumerates, shares a term with {outer}, which the model "
                        "sums out in an enclosing plate; enumerate both in the model (or both in the guide)"
                    )
                out = new(leaf, info[i][1] - {g})
                prog.append(("expect", out, g, i))
                ids = [j for j in ids if j != i] + [out]
        if not leaf:
            left = union(ids)
            if left:  # pragma: no cover - every var sits at some leaf
                raise ModelSpecError(f"enumerated sites {sorted(left)} were not summed out")
            prog.append(("root", ids))
            break
        groups: dict[tuple[frozenset[str], frozenset[str]], list[int]] = defaultdict(list)
        for i in ids:
            vs = info[i][1]
            parent = frozenset().union(*(evars[u].plates for u in vs))
            if parent == leaf or not parent <= leaf:
                raise ModelSpecError(
                    f"the enumerated sites {sorted(vs)} meet in plates {sorted(leaf)} that none of them spans alone: "
                    "the plated factor graph is not a tree (nest one site's plates in the other's)"
                )
            groups[(parent, vs)].append(i)
        for (parent, vs), used in groups.items():
            out = new(parent, vs)
            prog.append(("reduce", out, used, tuple(sorted(leaf - parent))))
            tree[parent].append(out)
    plan.contractions[key] = prog
    return prog


class _Ring:
    """Log-sum-exp (``temperature = 1``, marginals) or max (``temperature = 0``, MAP)."""

    def __init__(self, maximise: bool) -> None:
        self.maximise = maximise

    def sum(self, x: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
        return x.amax(dim, keepdim=True) if self.maximise else torch.logsumexp(x, dim, keepdim=True)

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = a.unsqueeze(-1) + b.unsqueeze(-3)
        return x.amax(-2) if self.maximise else torch.logsumexp(x, -2)


def chain_product(x: torch.Tensor, ring: _Ring) -> torch.Tensor:
    """``x[..., 0, :, :] (x) x[..., 1, :, :] (x) ...`` in the ring, by pairwise products
    (``log2 T`` rounds of batched ``K x K`` products): shape ``(..., T, K, K) -> (..., K, K)``."""
    while x.shape[-3] > 1:
        t = x.shape[-3]
        even = t - t % 2
        prod = ring.matmul(x[..., 0:even:2, :, :], x[..., 1:even:2, :, :])
        x = torch.cat([prod, x[..., even:, :, :]], -3) if t % 2 else prod
    return x.squeeze(-3)


def _add(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    out = tensors[0]
    for t in tensors[1:]:
        out = out + t
    return out


def _expand_dims(x: torch.Tensor, sizes: Mapping[int, int]) -> torch.Tensor:
    shape = list(x.shape)
    for d, n in sizes.items():
        shape[d] = n
    return x.expand(shape)


def markov_tensor(var: EnumVar, x: torch.Tensor, layout: Layout) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """A chain's summed terms as ``(..., T, K, K)`` (time, previous, current state last),
    with the positions the three dims came from."""
    assert var.prev_dim is not None and var.along is not None
    t_pos = layout.plate_pos[var.along]
    x = _expand_dims(x, {var.prev_dim: var.size, var.dim: var.size, t_pos: layout.extents[var.along]})
    return x.movedim((t_pos, var.prev_dim, var.dim), (-3, -2, -1)), (t_pos, var.prev_dim, var.dim)


def contract(plan: EnumPlan, terms: Sequence[EnumTerm], layout: Layout,
             guide_log_probs: Mapping[str, torch.Tensor] | None = None, maximise: bool = False,
             record: Record | None = None) -> torch.Tensor:
    """Contract the terms of an enumerated model to shape ``sample_shape``.

    Parameters
    ----------
    plan : EnumPlan
        The model's enumeration plan.
    terms : sequence of EnumTerm
        The terms (full rank), model and guide (``-log q`` of guide-enumerated sites).
    layout : Layout
        Dims, extents and subsample scales of this run.
    guide_log_probs : mapping, optional
        Full-rank ``log q`` of each guide-enumerated site.
    maximise : bool
        Max-product instead of sum-product (for the MAP assignment).
    record : Record, optional
        Filled with each model elimination (for ``infer_discrete``).

    Returns
    -------
    torch.Tensor
        Shape ``sample_shape``: ``sum_x log sum_z p`` (or ``max_z``) with guide sites'
        expectations taken.
    """
    ring = _Ring(maximise)
    prog = plan_contraction(plan, [(t.plates, t.vars) for t in terms])
    slots: dict[int, torch.Tensor] = {i: t.tensor for i, t in enumerate(terms)}
    evars = plan.vars
    for ins in prog:
        kind = ins[0]
        if kind == "elim":
            _, out, v, used = ins
            var = evars[v]
            x = _expand_dims(_add([slots.pop(i) for i in used]), {var.dim: var.size})
            if record is not None:
                record.steps.append((var, x))
            slots[out] = ring.sum(x, var.dim)
        elif kind == "markov":
            _, out, m, used = ins
            var = evars[m]
            x, (t_pos, p_pos, c_pos) = markov_tensor(var, _add([slots.pop(i) for i in used]), layout)
            if record is not None:
                record.steps.append((var, x))
            total = ring.sum(chain_product(x, ring)[..., 0, :], -1).squeeze(-1)
            for pos in sorted((t_pos, p_pos, c_pos)):
                total = total.unsqueeze(pos)
            slots[out] = total
        elif kind == "expect":
            _, out, g, i = ins
            q = guide_log_probs[g].exp()  # type: ignore[index]
            slots[out] = (q * slots.pop(i)).sum(evars[g].dim, keepdim=True)
        elif kind == "reduce":
            _, out, used, plates = ins
            x = _add([slots.pop(i) for i in used])
            factor = 1.0
            dims = []
            for p in plates:
                pos = layout.plate_pos[p]
                factor *= layout.scales[p]
                if x.shape[pos] == 1:
                    factor *= layout.extents[p]  # the same term in every row
                else:
                    dims.append(pos)
            if dims:
                x = x.sum(dims, keepdim=True)
            slots[out] = x * factor if factor != 1.0 else x
        else:  # root
            x = _add([slots.pop(i) for i in ins[1]])
            ss = layout.sample_shape
            x = x.reshape(x.shape[layout.num_enum: layout.num_enum + len(ss)])
            return x.expand(ss) if x.shape != ss else x
    raise ModelSpecError("the enumerated model has no terms")  # pragma: no cover
