"""``FusedStep``: a whole SVI step (loss, gradient, Adam update) as one compiled graph."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..guides.guide import Guide
from ..program import MonadicProgram
from ..validation import validation_enabled
from .compiled import _is_compile_error, _own_code
from .elbo import ELBO
from .whitened import WhitenedAdam, _apply

__all__ = ["FusedStep", "fusion_blocker"]

# the Adam options the fused update implements (with these values); any other value sends the step
# back to the optimizer's own code
_ADAM_DEFAULTS = {"amsgrad": False, "maximize": False, "differentiable": False, "decoupled_weight_decay": False}


def fusion_blocker(optim: torch.optim.Optimizer, named: Mapping[int, str]) -> str | None:
    """Why ``optim`` cannot be fused into the compiled step, or ``None`` if it can.

    Fusable: exactly ``torch.optim.Adam`` or :class:`~quivers.infer.whitened.WhitenedAdam`
    with ``amsgrad``, ``maximize``, ``differentiable`` and ``decoupled_weight_decay`` off,
    no step hooks, and every parameter a parameter of the model, guide or objective
    (``named``: ``id(param) -> name``).
    """
    if type(optim) not in (torch.optim.Adam, WhitenedAdam):
        return f"{type(optim).__name__} is not Adam"
    if optim._optimizer_step_pre_hooks or optim._optimizer_step_post_hooks:
        return "the optimizer has step hooks"
    for i, group in enumerate(optim.param_groups):
        for key, value in _ADAM_DEFAULTS.items():
            if bool(group.get(key, value)) != value:
                return f"parameter group {i} sets {key}={group[key]!r}"
        for p in group["params"]:
            if id(p) not in named:
                return f"parameter group {i} holds a tensor that is not a parameter of the model, guide or objective"
    return None


class _Objective(nn.Module):
    """The loss as one module, so its parameters can be swapped by ``functional_call``."""

    def __init__(self, loss: ELBO, model: MonadicProgram, guide: Guide) -> None:
        super().__init__()
        self.loss = loss
        self.model = model
        self.guide = guide

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss(self.model, self.guide, batch)


class FusedStep:
    """One SVI step of Adam on an ELBO, compiled as a single graph.

    The loss, its gradient (``torch.func.grad_and_value`` over the optimizer's
    parameters, substituted with ``torch.func.functional_call``), the finiteness check and
    Adam's update (Kingma & Ba 2015, the arithmetic of ``torch.optim.Adam``; whitened
    groups as :class:`~quivers.infer.whitened.WhitenedAdam`) run as one
    ``torch.compile(fullgraph=True)`` function. The parameters and the optimizer's own
    state tensors (``exp_avg``, ``exp_avg_sq``, ``step``) are updated in place, so the
    optimizer's ``state_dict``, a later eager step and iterate averaging see them as
    after ``optimizer.step()``. Learning rates are graph inputs: a schedule that changes
    them every step does not recompile. A step whose loss or gradient is not finite
    changes nothing (parameters, moments and step count are selected with
    ``torch.where`` inside the graph), and reports it.

    The batch is prepared eagerly (its checks and subsampling) before the graph; the
    graph runs with site-level checks off, so the caller runs its first step eagerly.
    Parameter gradients (``.grad``) are not filled in.

    Parameters
    ----------
    loss, model, guide
        The objective and what it fits.
    **compile_kwargs
        Passed to ``torch.compile``.

    Notes
    -----
    Random draws inside the graph come from the compiler's generator (seeded from
    torch's), so a fused fit is reproducible from its seed but does not equal the eager
    fit draw for draw (it does with ``torch._inductor.config.fallback_random = True``,
    which the tests use to compare the two).
    """

    def __init__(self, loss: ELBO, model: MonadicProgram, guide: Guide, **compile_kwargs: Any) -> None:
        self.model = model
        self._objective = _Objective(loss, model, guide)
        self._named = {id(p): n for n, p in self._objective.named_parameters()}
        self._compiled = torch.compile(_own_code(self._step), fullgraph=True, **compile_kwargs)
        self.failed: str | None = None
        self._cached: tuple[tuple, tuple[list, ...], list[tuple[torch.Tensor, dict]]] | None = None

    def blocker(self, optim: torch.optim.Optimizer) -> str | None:
        """Why this optimizer cannot be fused (see :func:`fusion_blocker`), or ``None``."""
        return fusion_blocker(optim, self._named)

    def __call__(self, optim: torch.optim.Optimizer, batch: Mapping[str, Any] | None) -> tuple[float, bool] | None:
        """Take one fused step with ``optim``'s parameters, state and learning rates.

        Returns
        -------
        (float, bool) or None
            The loss before the step and whether it was applied (``False``: the loss or a
            gradient was not finite and nothing changed); ``None`` if the step cannot be
            compiled (a ``UserWarning`` says why, :attr:`failed` holds the reason, and
            nothing changed): the caller then steps eagerly.
        """
        prepared = self.model.prepare(batch)
        args, lrs = self._arguments(optim)
        for t, group in lrs:  # learning rates are read at every step: a scheduler may have changed them
            t.fill_(float(group["lr"]))
        try:
            with validation_enabled(False):
                out = self._compiled(*args, prepared)
        except Exception as error:  # noqa: BLE001 - only compile errors are swallowed
            if not _is_compile_error(error):
                raise
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            self.failed = reason
            warnings.warn(f"the SVI step of {type(self.model).__name__} cannot be compiled as one graph; "
                          f"running it eagerly instead ({reason})", stacklevel=3)
            return None
        loss, finite = out.tolist()
        return loss, bool(finite)

    def _arguments(self, optim: torch.optim.Optimizer) -> tuple[tuple[list, ...], list[tuple[torch.Tensor, dict]]]:
        """The graph's inputs for ``optim`` (names, parameters, Adam's state tensors, learning
        rate tensors, whitening maps, hyper-parameters) and the learning-rate tensors with
        their groups. Built once and reused while the optimizer, its state dictionary (which
        ``load_state_dict`` replaces), its groups, their parameters and hyper-parameters, and
        which parameters require gradients stay the same; missing state is created as
        ``torch.optim.Adam`` creates it."""
        key = (id(optim), id(optim.state), tuple(
            (id(g), id(g.get("whiten")), tuple(g["betas"]), g["eps"], g["weight_decay"],
             tuple((id(p), p.requires_grad) for p in g["params"])) for g in optim.param_groups))
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1], self._cached[2]
        names, params, moments, squares, steps, lrs, maps, hyper = [], [], [], [], [], [], [], []
        lr_groups: dict[tuple[int, torch.device, torch.dtype], tuple[torch.Tensor, dict]] = {}
        for i, group in enumerate(optim.param_groups):
            beta1, beta2 = group["betas"]
            p_mat = group.get("whiten")
            for p in group["params"]:
                if not p.requires_grad:
                    continue
                state = optim.state[p]
                if not state:  # as torch.optim.Adam initialises it (a float64 step under a float64 default)
                    double = torch.get_default_dtype() == torch.float64
                    state["step"] = torch.tensor(0.0, dtype=torch.float64 if double else torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                names.append(self._named[id(p)])
                params.append(p.detach())
                moments.append(state["exp_avg"])
                squares.append(state["exp_avg_sq"])
                steps.append(state["step"])
                where = (i, p.device, p.dtype)
                if where not in lr_groups:
                    lr_groups[where] = (torch.zeros((), device=p.device, dtype=torch.float64), group)
                lrs.append(lr_groups[where][0])
                maps.append(None if p_mat is None else p_mat.to(p))
                hyper.append((float(beta1), float(beta2), float(group["eps"]), float(group["weight_decay"])))
        args = (names, params, moments, squares, steps, lrs, maps, hyper)
        self._cached = (key, args, list(lr_groups.values()))
        return args, self._cached[2]

    def _step(self, names: list[str], params: list[torch.Tensor], moments: list[torch.Tensor],
              squares: list[torch.Tensor], steps: list[torch.Tensor], lrs: list[torch.Tensor],
              maps: list[torch.Tensor | None], hyper: list[tuple[float, float, float, float]],
              batch: Any) -> torch.Tensor:
        objective = self._objective

        def loss_of(values: list[torch.Tensor]) -> torch.Tensor:
            return torch.func.functional_call(objective, dict(zip(names, values, strict=True)), (batch,),
                                              strict=False, tie_weights=True)

        grads, loss = torch.func.grad_and_value(loss_of)(params)
        loss = loss.detach()
        finite = torch.isfinite(torch.cat([loss.reshape(1)] + [g.reshape(-1) for g in grads])).all()
        for p, g, m, v, t, lr, p_mat, (b1, b2, eps, wd) in zip(params, grads, moments, squares, steps, lrs, maps,
                                                                 hyper, strict=True):
            if wd:
                g = g + wd * p
            if p_mat is not None:
                g = _apply(p_mat, g, transpose=True)
            t_new = t + 1  # on the CPU, as torch.optim.Adam keeps it (capturable=False)
            m_new = torch.lerp(m, g, 1 - b1)
            v_new = v * b2 + (1 - b2) * g * g
            n = t_new.to(device=p.device, dtype=torch.float64)
            step_size = (lr / (1 - b1 ** n)).to(p.dtype)
            denom = v_new.sqrt() / torch.sqrt(1 - b2 ** n).to(p.dtype) + eps
            delta = -step_size * m_new / denom
            if p_mat is not None:
                delta = _apply(p_mat, delta)
            p.copy_(torch.where(finite, p + delta, p))
            m.copy_(torch.where(finite, m_new, m))
            v.copy_(torch.where(finite, v_new, v))
            t.copy_(torch.where(finite.to(t.device), t_new, t))
        return torch.stack([loss.to(torch.float64), finite.to(torch.float64)])
