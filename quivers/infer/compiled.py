"""Running an objective under ``torch.compile`` (the compiled path of ``SVI`` and ``SVIModule``)."""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..guides.guide import Guide
from ..program import MonadicProgram
from ..validation import validation_enabled
from .elbo import ELBO

__all__ = ["CompiledObjective", "compile_fallback"]


def _is_compile_error(error: BaseException) -> bool:
    """Whether ``error`` comes from TorchDynamo or a compiler backend (not from the model)."""
    from torch._dynamo.exc import TorchDynamoException

    module = type(error).__module__
    return isinstance(error, TorchDynamoException) or module.startswith(("torch._inductor", "torch._dynamo"))


def _own_code(fn: Callable) -> Callable:
    """A wrapper of ``fn`` with a code object of its own.

    TorchDynamo keeps its compiled graphs, and its recompile limit (8 by default), per
    code object. Without this every objective of a process (one per model and guide)
    would share one cache through the same method's code, and the ninth fit would fail
    with ``FailOnRecompileLimitHit``.
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return types.FunctionType(call.__code__.replace(), call.__globals__, getattr(fn, "__name__", "call"),
                              call.__defaults__, call.__closure__)


def compile_fallback(fn: Callable, what: str, fullgraph: bool = True, **compile_kwargs: Any) -> Callable:
    """``torch.compile(fn, fullgraph=fullgraph)`` that falls back to ``fn`` with a warning.

    The first compile error (a graph break, an operation Dynamo cannot trace, a backend
    failure) is reported once as a ``UserWarning`` naming ``what`` and the reason, and
    every later call runs ``fn`` eagerly.
    """
    compiled = torch.compile(_own_code(fn), fullgraph=fullgraph, **compile_kwargs)
    state: dict[str, Any] = {"eager": False}

    def call(*args: Any, **kwargs: Any) -> Any:
        if not state["eager"]:
            try:
                return compiled(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - only compile errors are swallowed
                if not _is_compile_error(error):
                    raise
                state["eager"] = True
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                warnings.warn(f"{what} cannot be compiled; running eagerly instead ({reason})", stacklevel=3)
        return fn(*args, **kwargs)

    call.is_eager = lambda: state["eager"]  # type: ignore[attr-defined]
    return call


class CompiledObjective:
    """The loss of an ELBO for one model and guide, run under ``torch.compile``.

    Each call prepares the batch eagerly, so batch checks (keys, finiteness, shapes) and
    subsampling run on every step. The first call then evaluates the loss eagerly with
    every site-level check on (supports, distribution shapes), so a bad model or batch
    fails with its usual error. Later calls run one compiled graph for the loss, with
    site-level checks off inside it (a data-dependent check would split the graph), and
    with AOTAutograd's compiled backward. If the model cannot be traced as one graph
    (``fullgraph=True``), a ``UserWarning`` names the reason and the loss runs eagerly
    from then on, with the same values.

    Parameters
    ----------
    loss : ELBO
        The objective.
    model : MonadicProgram
        The model.
    guide : Guide
        The guide.
    **compile_kwargs
        Passed to ``torch.compile`` (for instance ``mode="max-autotune"``).

    Notes
    -----
    Random draws inside a compiled graph come from the compiler's generator (seeded from
    torch's global one), so a compiled fit is reproducible run to run but does not equal
    the eager fit draw for draw.
    """

    def __init__(self, loss: ELBO, model: MonadicProgram, guide: Guide, **compile_kwargs: Any) -> None:
        self.loss = loss
        self.model = model
        self.guide = guide
        self._calls = 0
        self._compiled = compile_fallback(self._loss, f"the loss of {type(model).__name__}", **compile_kwargs)

    def _loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.loss(self.model, self.guide, batch)

    @property
    def is_eager(self) -> bool:
        """Whether compilation failed and the loss now runs eagerly."""
        return self._compiled.is_eager()

    def __call__(self, batch: Mapping[str, Any] | None = None) -> torch.Tensor:
        """The differentiable loss (negative ELBO, a scalar) on ``batch``."""
        prepared = self.model.prepare(batch)
        self._calls += 1
        if self._calls == 1 or self.is_eager:
            return self._loss(prepared)
        with validation_enabled(False):
            return self._compiled(prepared)
