"""``SVI``: the plain stochastic variational inference loop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..errors import ConfigError
from ..guides.guide import Guide, check_guide
from ..program import MonadicProgram
from .compiled import CompiledObjective, compile_fallback
from .elbo import ELBO, Trace_ELBO
from .fused import FusedStep
from .nonfinite import SkippedSteps, check_policy, nonfinite_error, step_is_finite
from .optim import check_optimizer
from .run import DEFAULT_LR, RUN_OPTIONS, SVIRunResult, run
from .whitened import WhitenedAdam

__all__ = ["SVI"]


class SVI:
    """Stochastic variational inference: one optimizer step of an ELBO per call.

    Parameters
    ----------
    model : MonadicProgram
        The model.
    guide : Guide
        The guide.
    optim : torch.optim.Optimizer, optional
        Optimizer over the guide's parameters; default
        :class:`~quivers.infer.whitened.WhitenedAdam` at lr 0.01 (plain Adam until
        :meth:`run` whitens it). Model parameters (``Param`` steps and
        submodules used by step functions) missing from it are added as a new parameter
        group with the first group's hyper-parameters, so they train with the guide's
        (as Pyro's param store does).
    loss : ELBO
        The objective (default ``Trace_ELBO()``).
    compile : bool
        Run each step as one ``torch.compile`` graph: with ``torch.optim.Adam`` or
        :class:`~quivers.infer.whitened.WhitenedAdam` (the default) the loss, its gradient
        and the update are fused (:class:`~quivers.infer.fused.FusedStep`); with another
        optimizer the loss and its backward are one graph
        (:class:`~quivers.infer.compiled.CompiledObjective`) and the optimizer's step is
        compiled apart. The first step runs eagerly with every check; a model that cannot
        be compiled falls back to eager with a ``UserWarning``. Compilation takes seconds
        (see ``docs/speed.md``), so it pays for fits of thousands of steps; :meth:`run`
        chooses by itself unless told.
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
        optim: torch.optim.Optimizer | None = None,
        loss: ELBO | None = None,
        *,
        compile: bool = False,
        on_nonfinite: str = "raise",
    ) -> None:
        self.on_nonfinite = check_policy(on_nonfinite)
        check_guide(model, guide, "SVI")
        self.default_optim = optim is None
        if optim is None:
            optim = WhitenedAdam([p for p in guide.parameters() if p.requires_grad], lr=DEFAULT_LR)
        check_optimizer(optim, "SVI")
        self._skipped = SkippedSteps()
        self._num_steps = 0
        self.model = model
        self.guide = guide
        self.default_loss = loss is None
        self.loss = loss if loss is not None else Trace_ELBO()
        self.compile = False
        self._objective: CompiledObjective | None = None
        self._fused: FusedStep | None = None
        self._fusable: tuple[int, int, bool] | None = None
        self._first_compiled_step = 1
        self.optim = optim
        self.set_optimizer(optim)
        if compile:
            self.enable_compile()

    def enable_compile(self, **compile_kwargs: Any) -> None:
        """Compile the steps from the next one on (as ``compile=True``; ``compile_kwargs``
        go to ``torch.compile``). The next step still runs eagerly with every check."""
        if self.compile:
            return
        self.compile = True
        self._objective = CompiledObjective(self.loss, self.model, self.guide, **compile_kwargs)
        self._fused = FusedStep(self.loss, self.model, self.guide, **compile_kwargs)
        self._first_compiled_step = self._num_steps + 1
        self.set_optimizer(self.optim)

    def set_optimizer(self, optim: torch.optim.Optimizer) -> None:
        """Use ``optim`` from the next step on (model and objective parameters it lacks are added, as in
        ``__init__``).

        Raises
        ------
        ConfigError
            If a parameter group's learning rate is not a finite number > 0.
        """
        check_optimizer(optim, "SVI")
        have = {id(p) for g in optim.param_groups for p in g["params"]}
        missing = [p for p in [*self.model.parameters(), *self.loss.parameters()]
                   if p.requires_grad and id(p) not in have]
        if missing:
            optim.add_param_group({"params": missing})
        self.optim = optim
        # eager: look optim.step up at each call, so wrappers added later (an lr scheduler's
        # step counter) see it
        self._optim_step = (
            compile_fallback(optim.step, f"the {type(optim).__name__} step", fullgraph=False) if self.compile
            else lambda: self.optim.step()
        )

    def run(self, batch: Mapping[str, Any] | None = None, num_steps: int | None = None, *,
            progress_bar: bool = True, **options: Any) -> SVIRunResult:
        """Fit the guide with the recommended recipe (NumPyro's ``SVI.run``), every part
        switchable.

        1. **Warm start** (``warm_start=True``): :func:`~quivers.guides.laplace_warm_start`
           finds the mode of the unconstrained posterior in float64 (damped Newton with
           the exact Hessian up to 200 latent dimensions, L-BFGS above; ``num_restarts=2``
           seeded restarts, the best mode kept; a warning when it does not converge) and
           starts the guide at the Laplace Gaussian, or its family's nearest member.
           Guides without a Gaussian (structured, custom) start where they are.
        2. **Whitened Adam** (``whiten=True``, when ``SVI`` was built without an
           optimizer): Adam's steps for the guide's location are taken in coordinates
           whitened by the Laplace covariance (:class:`~quivers.infer.whitened.WhitenedAdam`),
           so ``lr`` (default 0.01) means posterior sds in every direction; the guide's
           parameters stay in the model's coordinates throughout.
        3. **Explore** at the constant ``lr`` until the ELBO stops improving
           (:class:`~quivers.infer.run.PlateauRule`: window means of 200 steps no longer
           drop by two standard errors; ``early_stopping=False`` runs to the cap), at most
           ``num_steps - min_refine_steps`` steps.
        4. **Refine**: ``max(min_refine_steps, explore / 2)`` further steps with the
           learning rate decaying exponentially to ``final_lr_frac * lr`` (default 1%),
           the parameters averaged over them (Polyak & Juditsky 1992, with
           :class:`~quivers.infer.averaging.IterateAverage`) and the average kept.
        5. **Diagnose**: :func:`~quivers.infer.psis_diagnostic` with
           ``psis_particles=1000`` draws on the full batch.

        **Compilation** (``compile=None``, the default, when ``SVI`` was built without
        ``compile=True``): steps start eagerly and are timed; at step 50, every 200 steps
        of the explore phase, and at the start of the refine phase, the rest of the fit is
        compiled (:meth:`enable_compile`) once the time that saves,
        ``steps_left * eager_step * 0.6``, exceeds 15 s, the measured cost of a first
        compilation. ``steps_left`` is the refine phase's length at its start; before it,
        with early stopping, as many steps as taken so far and at least
        ``min_refine_steps`` (a fit that has run ``n`` steps is expected to run about ``n``
        more), and without early stopping the steps to the cap. ``compile=True`` compiles
        from the start, ``compile=False`` never.

        Parameters
        ----------
        batch : mapping, optional
            The data, every plate in full (plates with ``subsample_size`` are subsampled
            at every step, as :meth:`step` does; the warm start and the diagnostic use
            the whole batch).
        num_steps : int, optional
            Cap on the SVI steps (default 20,000).
        progress_bar : bool
            Show a tqdm bar with the smoothed ELBO (default True).
        **options
            ``warm_start`` (bool), ``num_restarts`` (int), ``whiten`` (bool), ``lr``
            (float), ``final_lr_frac`` (float in (0, 1]), ``averaging`` (bool),
            ``early_stopping`` (bool), ``stopping`` (:class:`PlateauRule`),
            ``min_refine_steps`` (int), ``psis_particles`` (int, 0 for none),
            ``compile`` (bool or None).

        Returns
        -------
        SVIRunResult
            Losses, steps taken, whether the stopping rule fired, seconds, the warm start
            and the PSIS diagnostic; ``print()`` it for a summary.

        Raises
        ------
        ConfigError
            On an unknown option or a bad value (before anything changes).
        NonFiniteLossError
            As :meth:`step`.
        """
        unknown = sorted(set(options) - RUN_OPTIONS)
        if unknown:
            raise ConfigError(f"SVI.run: unknown options {unknown}; expected some of {sorted(RUN_OPTIONS)}")
        return run(self, batch, num_steps, progress_bar=progress_bar, **options)

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
        if self._can_fuse():
            for group in self.optim.param_groups:  # a fused step fills no .grad: drop any left from before,
                for p in group["params"]:  # as zero_grad(set_to_none=True) would, without its overhead
                    p.grad = None
            result = self._fused(self.optim, batch)
            if result is not None:
                self._num_steps += 1
                loss, applied = result
                if not applied:
                    return self._not_finite(batch, loss)
                self._skipped.applied()
                return loss
        self.optim.zero_grad(set_to_none=True)
        compiled = self._objective is not None and self._num_steps >= self._first_compiled_step
        loss = self._objective(batch) if compiled else self.loss(self.model, self.guide, batch)
        loss.backward()
        self._num_steps += 1
        params = [p for g in self.optim.param_groups for p in g["params"]]
        if not step_is_finite(loss.detach(), params):
            self.optim.zero_grad(set_to_none=True)
            return self._not_finite(batch, float(loss.detach()))
        if compiled:
            self._optim_step()
        else:
            self.optim.step()
        self._skipped.applied()
        return float(loss.detach())

    def _not_finite(self, batch: Mapping[str, Any] | None, loss: float) -> float:
        """A step with a non-finite loss or gradient was not applied: raise or count it."""
        if self.on_nonfinite == "raise":
            raise nonfinite_error(self.model, self.guide, batch, loss, self._num_steps)
        self._skipped.skipped(self._num_steps)
        return loss

    def _can_fuse(self) -> bool:
        """Whether this step runs as one fused graph: compiling, past the eager first step,
        not fallen back, and the optimizer fusable (checked once per optimizer and group count)."""
        fused = self._fused
        if fused is None or fused.failed is not None or self._num_steps < self._first_compiled_step:
            return False
        key = (id(self.optim), len(self.optim.param_groups))
        if self._fusable is None or self._fusable[:2] != key:
            self._fusable = (*key, fused.blocker(self.optim) is None)
        return self._fusable[2]

    @property
    def num_skipped_steps(self) -> int:
        """Steps dropped for a non-finite loss or gradient (``on_nonfinite="skip"``)."""
        return self._skipped.total

    @torch.no_grad()
    def evaluate_loss(self, batch: Mapping[str, Any] | None = None) -> float:
        """The loss without taking a step (no gradients)."""
        return float(self.loss(self.model, self.guide, batch))
