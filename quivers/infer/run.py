"""``SVI.run``: the recommended fit (warm start, whitened Adam, decaying learning rate,
iterate averaging, a stopping rule, PSIS diagnostic) as one call."""

from __future__ import annotations

import inspect
import math
import time
import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, GuideError
from ..guides.laplace import AutoLaplaceApproximation
from ..guides.warm_start import WarmStart, laplace_warm_start
from ..validation import check_positive_int
from .averaging import IterateAverage
from .psis import PSISDiagnostic, psis_diagnostic
from .whitened import WhitenedAdam, whitened_groups

if TYPE_CHECKING:
    from .svi import SVI

__all__ = ["SVIRunResult", "PlateauRule", "run"]

DEFAULT_LR = 0.03
DEFAULT_MAX_STEPS = 20_000
DEFAULT_PARTICLES = 16
# the automatic compile choice (``compile=None``), from benchmarks/speed.py on this project's 2-core
# CPU: compiling costs about 15 s the first time a model is compiled (about 4 s once torch's
# on-disk caches hold its kernels), and a compiled step takes 0.1 to 0.4 of an eager one
COMPILE_SECONDS = 15.0
COMPILED_STEP_SHARE = 0.4
PROBE_STEPS = (10, 50)  # the eager steps timed before the first choice: 11 to 50
RECONSIDER_EVERY = 200


@dataclass
class SVIRunResult:
    """What :meth:`SVI.run <quivers.infer.SVI.run>` did.

    Attributes
    ----------
    losses : Tensor
        The loss (negative ELBO, nats) of every step, shape ``(num_steps,)``.
    num_steps : int
        SVI steps taken.
    converged : bool
        Whether the stopping rule saw the ELBO stop improving before ``num_steps`` ran out.
    seconds : float
        Wall time of the whole run: warm start, SVI (compilation included), diagnostic.
    warm_start : WarmStart or None
        The warm start's result (``None`` when it was off or the guide has no Gaussian).
    diagnostics : PSISDiagnostic or None
        The PSIS k-hat of the fitted guide (``None`` with ``psis_particles=0``).
    explore_steps : int
        Steps at the constant learning rate, before the decay and averaging began.
    notes : list of str
        What the run chose or skipped, and why (also warned where it matters).
    """

    losses: torch.Tensor
    num_steps: int
    converged: bool
    seconds: float
    warm_start: WarmStart | None = None
    diagnostics: PSISDiagnostic | None = None
    explore_steps: int = 0
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        elbo = -float(self.losses[-min(100, len(self.losses)):].mean()) if len(self.losses) else math.nan
        lines = [f"SVI.run: {self.num_steps} steps in {self.seconds:.1f} s, ELBO {elbo:.2f} (mean of the last "
                 f"{min(100, len(self.losses))}), {'converged' if self.converged else 'stopped at num_steps'}"]
        if self.diagnostics is not None:
            lines.append(str(self.diagnostics))
        return "\n".join(lines + self.notes)


class PlateauRule:
    """The stopping rule: the ELBO no longer improves.

    The losses are cut into consecutive windows of ``window`` steps; after each window
    the mean loss is compared with the previous window's. The ELBO has stopped improving
    when the drop is smaller than ``z`` standard errors of the difference of the two means
    (each window's standard error from its own spread), that is, indistinguishable from the
    Monte Carlo noise of the loss estimates.

    Parameters
    ----------
    window : int
        Steps per window (default 200).
    z : float
        How many standard errors a real improvement must exceed (default 2).
    """

    def __init__(self, window: int = 200, z: float = 2.0) -> None:
        self.window = check_positive_int(window, "window", ConfigError)
        self.z = float(z)

    def __call__(self, losses: list[float]) -> bool:
        """Whether the ELBO has stopped improving, judged at a window's end (``False`` in
        between and before two full windows)."""
        w = self.window
        n = len(losses)
        if n < 2 * w or n % w:
            return False
        cur = torch.tensor(losses[n - w:], dtype=torch.float64)
        prev = torch.tensor(losses[n - 2 * w:n - w], dtype=torch.float64)
        se = math.sqrt(float(cur.var() + prev.var()) / w)
        return float(prev.mean() - cur.mean()) < self.z * se


def run(svi: SVI, batch: Mapping[str, Any] | None, num_steps: int | None = None, *, progress_bar: bool = True,
        warm_start: bool = True, num_restarts: int = 2, whiten: bool = True, lr: float | None = None,
        final_lr_frac: float = 0.01, averaging: bool = True, early_stopping: bool = True,
        stopping: PlateauRule | None = None, min_refine_steps: int = 500, psis_particles: int = 1000,
        num_particles: int | None = None, compile: bool | None = None) -> SVIRunResult:
    """The body of :meth:`SVI.run <quivers.infer.SVI.run>` (documented there)."""
    cap = DEFAULT_MAX_STEPS if num_steps is None else check_positive_int(num_steps, "num_steps", ConfigError)
    if not 0 < final_lr_frac <= 1:
        raise ConfigError(f"SVI.run: final_lr_frac must be in (0, 1], got {final_lr_frac!r}")
    if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"SVI.run: lr must be a finite number > 0, got {lr!r}")
    min_refine_steps = check_positive_int(min_refine_steps, "min_refine_steps", ConfigError)
    if num_particles is None:
        num_particles = DEFAULT_PARTICLES if svi.default_loss else svi.loss.num_particles
    num_particles = check_positive_int(num_particles, "num_particles", ConfigError)
    if compile not in (None, True, False):
        raise ConfigError(f"SVI.run: compile must be True, False or None (choose), got {compile!r}")
    if psis_particles:
        psis_particles = check_positive_int(psis_particles, "psis_particles", ConfigError)
    rule = stopping if stopping is not None else PlateauRule()
    t0 = time.perf_counter()
    notes: list[str] = []
    guide = svi.guide
    ws: WarmStart | None = None
    if warm_start:
        if getattr(guide, "_set_moments", None) is None:
            notes.append(f"no warm start: {type(guide).__name__} has no Gaussian to set")
        else:
            try:
                ws = laplace_warm_start(guide, batch, num_restarts=num_restarts)
            except GuideError as e:
                warnings.warn(f"SVI.run: no warm start ({e})", stacklevel=3)
                notes.append(f"no warm start: {e}")
    whiten_guide = whiten and ws is not None and ws.converged and getattr(guide, "has_whitened_form", False)
    if whiten and ws is not None and not ws.converged:
        notes.append("not whitened: the warm start did not reach a mode")
    if svi.default_optim:
        # guides without a whitened form (AutoNormal) whiten their locations in the optimizer
        loc_whitening = None if whiten_guide else getattr(guide, "_loc_whitening", None)
        by = loc_whitening(ws.cov) if (whiten and ws is not None and ws.converged and loc_whitening) else []
        params = [p for p in guide.parameters() if p.requires_grad]
        svi.set_optimizer(WhitenedAdam(whitened_groups(params, by), lr=lr or DEFAULT_LR))
    elif lr is not None:
        for group in svi.optim.param_groups:
            group["lr"] = lr
    saved_particles = svi.loss.num_particles
    svi.loss.num_particles = num_particles
    try:
        with guide.whitened(ws.loc, ws.cov) if whiten_guide else nullcontext():
            if compile:
                svi.enable_compile()
            losses, converged, explore = _fit(svi, batch, cap, progress_bar, final_lr_frac, averaging,
                                              early_stopping, rule, min_refine_steps,
                                              notes if compile is None and not svi.compile else None)
    finally:
        svi.loss.num_particles = saved_particles
    if not isinstance(guide, AutoLaplaceApproximation) and not converged:
        notes.append(f"the ELBO was still improving when num_steps ({cap}) ran out")
    if isinstance(guide, AutoLaplaceApproximation):
        notes.append("AutoLaplaceApproximation: the MAP search is the whole fit")
        converged = True
    diag = psis_diagnostic(svi.model, guide, batch, psis_particles) if psis_particles else None
    return SVIRunResult(torch.tensor(losses), len(losses), converged, time.perf_counter() - t0, ws, diag,
                        explore, notes)


# the keyword options of SVI.run: run's own keyword-only parameters
RUN_OPTIONS = frozenset(name for name, p in inspect.signature(run).parameters.items()
                        if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "progress_bar")


def should_compile(eager_step_s: float, steps_left: int) -> bool:
    """Whether compiling pays for the rest of a fit: the time it saves,
    ``steps_left * eager_step_s * (1 - COMPILED_STEP_SHARE)``, exceeds ``COMPILE_SECONDS``
    (the constants' sources are given where they are defined)."""
    return steps_left * eager_step_s * (1 - COMPILED_STEP_SHARE) > COMPILE_SECONDS


class _CompileChoice:
    """Whether to compile the rest of a fit, decided while it runs (``compile=None``).

    The eager step is timed over steps 11 to 50, then between the later decision points.
    At step 50, at every ``RECONSIDER_EVERY``-th step of the explore phase and at the start
    of the refine phase, the rest is compiled if :func:`should_compile` says it pays for
    the steps expected to be left. With the stopping rule on, during the explore phase
    that is as many as the fit has taken so far and at least the refine phase's
    ``min_refine_steps`` (a fit that has run ``n`` steps is taken to run about ``n`` more,
    within the cap); without it, exactly the steps to the cap; at the refine phase's
    start, exactly its length.
    """

    def __init__(self, svi: SVI, notes: list[str]) -> None:
        self.svi = svi
        self.notes = notes
        self.done = False
        self._mark: tuple[int, float] | None = None
        self._step_s: float | None = None

    def after_step(self, n: int, steps_left: int) -> None:
        """Time the eager explore steps (call after step ``n``) and, at a decision point,
        consider compiling for ``steps_left`` more steps."""
        if n not in PROBE_STEPS and not (n > PROBE_STEPS[1] and n % RECONSIDER_EVERY == 0):
            return
        now = time.perf_counter()
        if self._mark is not None:
            self._step_s = (now - self._mark[1]) / (n - self._mark[0])
        self._mark = (n, now)
        self.consider(n, steps_left)

    def consider(self, n: int, steps_left: int) -> None:
        """Compile from the next step if it pays for ``steps_left`` more steps."""
        if self.done or self._step_s is None:
            return
        if should_compile(self._step_s, steps_left):
            self.svi.enable_compile()
            self.done = True
            self.notes.append(f"compiled after {n} eager steps of {self._step_s * 1e3:.2f} ms (about "
                              f"{steps_left} steps expected to go)")


def _fit(svi: SVI, batch: Mapping[str, Any] | None, cap: int, progress_bar: bool, final_lr_frac: float,
         averaging: bool, early_stopping: bool, rule: PlateauRule, min_refine_steps: int,
         choose_compile: list[str] | None = None) -> tuple[list[float], bool, int]:
    """The explore and refine phases: losses, whether the rule fired, explore steps.
    With ``choose_compile`` (the run's notes), compilation is chosen as
    :class:`_CompileChoice` describes."""
    losses: list[float] = []
    choice = _CompileChoice(svi, choose_compile) if choose_compile is not None else None
    steps_to_run = 0 if isinstance(svi.guide, AutoLaplaceApproximation) else cap
    explore_cap = max(steps_to_run - min_refine_steps, steps_to_run // 2)
    converged = False
    base_lrs = [g["lr"] for g in svi.optim.param_groups]
    bar = tqdm(total=steps_to_run, disable=not progress_bar, desc="SVI", unit="step", leave=False)
    smoothed = None
    try:
        def one_step(exploring: bool) -> None:
            nonlocal smoothed
            loss = svi.step(batch)
            losses.append(loss)
            if math.isfinite(loss):
                smoothed = -loss if smoothed is None else 0.99 * smoothed - 0.01 * loss
            bar.update(1)
            n = len(losses)
            if n % 50 == 0 and smoothed is not None:
                bar.set_postfix(elbo=f"{smoothed:.3f}")
            if choice is not None and exploring and not choice.done:
                left = steps_to_run - n  # exact without the stopping rule
                choice.after_step(n, min(left, max(n, min_refine_steps)) if early_stopping else left)

        while len(losses) < explore_cap:
            one_step(True)
            if early_stopping and rule(losses):
                converged = True
                break
        explore = len(losses)
        refine = min(max(min_refine_steps, explore // 2), steps_to_run - explore)
        bar.total = explore + refine
        bar.refresh()
        if choice is not None:
            choice.consider(explore, refine)
        if refine > 0:
            gamma = final_lr_frac ** (1.0 / refine)
            averaged: IterateAverage | None = None
            for i in range(refine):
                one_step(False)
                for g, base in zip(svi.optim.param_groups, base_lrs, strict=True):
                    g["lr"] = base * gamma ** (i + 1)
                if averaging and averaged is None:  # the mean of the values after each refine step
                    averaged = IterateAverage(p for g in svi.optim.param_groups for p in g["params"])
                elif averaged is not None:
                    averaged.update()
            if averaged is not None:
                averaged.copy_to_params()
    finally:
        bar.close()
        for g, base in zip(svi.optim.param_groups, base_lrs, strict=True):
            g["lr"] = base
    return losses, converged, explore
