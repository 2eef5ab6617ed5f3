"""``SVI``: the plain stochastic variational inference loop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..guides.guide import Guide, check_guide
from ..program import MonadicProgram
from .compiled import CompiledObjective, compile_fallback
from .elbo import ELBO, Trace_ELBO
from .nonfinite import SkippedSteps, check_policy, nonfinite_error, step_is_finite
from .optim import check_optimizer

__all__ = ["SVI"]


class SVI:
    """Stochastic variational inference: one optimizer step of an ELBO per call.

    Parameters
    ----------
    model : MonadicProgram
        The model.
    guide : Guide
        The guide.
    optim : torch.optim.Optimizer
        Optimizer over the guide's parameters. Model parameters (``Param`` steps and
        submodules used by step functions) missing from it are added as a new parameter
        group with the first group's hyper-parameters, so they train with the guide's
        (as Pyro's param store does).
    loss : ELBO
        The objective (default ``Trace_ELBO()``).
    compile : bool
        Run the loss and its backward as one ``torch.compile`` graph (see
        :class:`~quivers.infer.compiled.CompiledObjective`), and the optimizer step under
        ``torch.compile`` too (``torch.optim`` keeps one deliberate graph break there). The
        first step runs eagerly with every check; a model that cannot be compiled falls
        back to eager with a ``UserWarning``. Compilation takes seconds, so it pays for
        fits of thousands of steps.
    on_nonfinite : {"raise", "skip"}
        What a step with a non-finite loss or gradient does. ``"raise"`` (default): raise
        :class:`~quivers.errors.NonFiniteLossError` naming the sites whose log-density is
        non-finite, without applying the step. ``"skip"``: drop the step (parameters and
        optimizer state unchanged), count it in :attr:`num_skipped_steps`, and go on; a
        ``RuntimeWarning`` says so after 10 skipped steps in a row.

    Attributes
    ----------
    num_skipped_steps : int
        Steps dropped for a non-finite loss or gradient (``on_nonfinite="skip"``).

    Raises
    ------
    GuideError
        If ``guide`` was built for another model instance or samples sites that are not
        latent sites of ``model`` (see :func:`~quivers.guides.guide.check_guide`).
    ConfigError
        If ``on_nonfinite`` is not ``"raise"`` or ``"skip"``, or a parameter group's
        learning rate is not a finite number > 0 (also checked before every step, as a
        scheduler may change it).

    Examples
    --------
    >>> svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.01), Trace_ELBO())
    >>> for _ in range(2000):
    ...     loss = svi.step(batch)
    """

    def __init__(
        self,
        model: MonadicProgram,
        guide: Guide,
        optim: torch.optim.Optimizer,
        loss: ELBO | None = None,
        *,
        compile: bool = False,
        on_nonfinite: str = "raise",
    ) -> None:
        self.on_nonfinite = check_policy(on_nonfinite)
        check_guide(model, guide, "SVI")
        check_optimizer(optim, "SVI")
        self._skipped = SkippedSteps()
        self._num_steps = 0
        self.model = model
        self.guide = guide
        self.optim = optim
        self.loss = loss if loss is not None else Trace_ELBO()
        have = {id(p) for g in optim.param_groups for p in g["params"]}
        missing = [p for p in model.parameters() if p.requires_grad and id(p) not in have]
        if missing:
            optim.add_param_group({"params": missing})
        self.compile = bool(compile)
        self._objective = CompiledObjective(self.loss, model, guide) if compile else None
        # eager: look optim.step up at each call, so wrappers added later (an lr scheduler's
        # step counter) see it
        self._optim_step = (
            compile_fallback(optim.step, f"the {type(optim).__name__} step", fullgraph=False) if compile
            else lambda: self.optim.step()
        )

    def step(self, batch: Mapping[str, Any] | None = None) -> float:
        """Take one gradient step on the loss.

        Returns
        -------
        float
            The loss (negative ELBO) before the step.

        Raises
        ------
        QuiversError
            On invalid input, before any parameter changes (a
            :class:`~quivers.errors.ConfigError` for a learning rate that is not a finite
            number > 0).
        NonFiniteLossError
            On a non-finite loss or gradient with ``on_nonfinite="raise"``; the step is
            not applied.
        """
        check_optimizer(self.optim, "SVI")
        self.optim.zero_grad(set_to_none=True)
        if self._objective is not None:
            loss = self._objective(batch)
        else:
            loss = self.loss(self.model, self.guide, batch)
        loss.backward()
        self._num_steps += 1
        params = [p for g in self.optim.param_groups for p in g["params"]]
        if not step_is_finite(loss.detach(), params):
            self.optim.zero_grad(set_to_none=True)
            if self.on_nonfinite == "raise":
                raise nonfinite_error(self.model, self.guide, batch, float(loss.detach()), self._num_steps)
            self._skipped.skipped(self._num_steps)
            return float(loss.detach())
        self._optim_step()
        self._skipped.applied()
        return float(loss.detach())

    @property
    def num_skipped_steps(self) -> int:
        """Steps dropped for a non-finite loss or gradient (``on_nonfinite="skip"``)."""
        return self._skipped.total

    @torch.no_grad()
    def evaluate_loss(self, batch: Mapping[str, Any] | None = None) -> float:
        """The loss without taking a step (no gradients)."""
        return float(self.loss(self.model, self.guide, batch))
