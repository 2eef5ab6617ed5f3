"""Step specs: the declarations a ``MonadicProgram`` is made of.

A step binds a name to a distribution (or a value) computed from the program's inputs
and the names bound before it, like ``let z ~ D(x, ...) in ...``. The step function
names what it depends on by its parameter names: earlier sites, parameters, or fields of
the batch (program inputs such as ``x``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch.distributions import constraints

from ..errors import ModelSpecError
from .names import check_identifier
from .plate import Plate

__all__ = ["Step", "Latent", "Observed", "Deterministic", "Factor", "Param"]

PlateArg = Plate | tuple[Plate, ...] | list[Plate] | None


def _dependencies(name: str, fn: Callable[..., Any]) -> tuple[tuple[str, ...], dict[str, Any]]:
    if not callable(fn):
        raise ModelSpecError(f"site {name!r}: expected a callable step function, got {type(fn).__name__}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as e:  # builtins without signatures
        raise ModelSpecError(f"site {name!r}: cannot read the step function's signature ({e})") from e
    deps, defaults = [], {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ModelSpecError(
                f"site {name!r}: step functions name their dependencies explicitly; "
                f"*args/**kwargs ({p.name}) are not allowed"
            )
        deps.append(p.name)
        if p.default is not p.empty:
            defaults[p.name] = p.default
    return tuple(deps), defaults


def _plates(name: str, plate: PlateArg) -> tuple[Plate, ...]:
    if plate is None:
        return ()
    plates = (plate,) if isinstance(plate, Plate) else tuple(plate)
    for p in plates:
        if not isinstance(p, Plate):
            raise ModelSpecError(f"site {name!r}: plate= expects Plate objects, got {type(p).__name__}")
    if len({p.name for p in plates}) != len(plates):
        raise ModelSpecError(f"site {name!r}: the same plate is given twice")
    return plates


class Step:
    """Base class of step specs.

    Parameters
    ----------
    name : str
        Site name; a Python identifier, unique within the program.
    fn : callable
        Step function. Its parameter names are the site's dependencies.
    plate : Plate or sequence of Plate, optional
        The plates the site sits in.
    """

    kind: str = "step"

    def __init__(self, name: str, fn: Callable[..., Any], plate: PlateArg = None) -> None:
        self.name = check_identifier(name, "site")
        self.fn = fn
        self.deps, self.defaults = _dependencies(name, fn)
        self.plates = _plates(name, plate)

    def __repr__(self) -> str:
        plates = ", ".join(p.name for p in self.plates)
        return f"{type(self).__name__}({self.name!r}, deps={list(self.deps)}, plates=[{plates}])"


class Latent(Step):
    """A latent random variable ``name ~ fn(...)``; ``fn`` returns a ``Distribution``.

    The value has shape ``sample_shape + batch_shape + event_shape`` (module docstring
    of :mod:`quivers.shapes`). Guides approximate its posterior.

    Parameters
    ----------
    name, fn, plate
        As for :class:`Step`.
    enumerate : {None, "parallel"}
        ``"parallel"`` marks a discrete site with finite support for exact summation by
        :class:`~quivers.infer.TraceEnum_ELBO` (Pyro's ``infer={"enumerate":
        "parallel"}``): automatic guides leave it out, and the objective sums it out of the
        model. See :func:`~quivers.program.config_enumerate` and the docs page "Discrete
        latent variables".

    Raises
    ------
    ModelSpecError
        If ``enumerate`` is neither ``None`` nor ``"parallel"``.
    """

    kind = "latent"

    def __init__(self, name: str, fn: Callable[..., Any], plate: PlateArg = None,
                 enumerate: str | None = None) -> None:
        super().__init__(name, fn, plate)
        if enumerate not in (None, "parallel"):
            hint = ("; sequential enumeration is not supported (parallel enumeration sums the same terms in one "
                    "vectorised pass)") if enumerate == "sequential" else ""
            raise ModelSpecError(f"site {name!r}: enumerate must be None or 'parallel', got {enumerate!r}{hint}")
        self.enumerate = enumerate


class Observed(Step):
    """An observed random variable; its value is ``batch[name]``.

    Parameters
    ----------
    name, fn, plate
        As for :class:`Step`; ``fn`` returns a ``Distribution``.
    obs_mask : torch.Tensor of bool, optional
        Partially observed data (Pyro's ``obs_mask``): ``True`` where the value is
        observed. Its shape is the site's batch shape (``event_shape`` must be ``()``).
        Masked entries become the latent site ``f"{name}_unobserved"`` of the same
        shape, imputed by the guide; the site's value is the observed data where the
        mask is ``True`` and the imputed value elsewhere.
    """

    kind = "observed"

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        plate: PlateArg = None,
        obs_mask: torch.Tensor | None = None,
    ) -> None:
        super().__init__(name, fn, plate)
        if obs_mask is not None:
            obs_mask = torch.as_tensor(obs_mask)
            if obs_mask.dtype != torch.bool:
                raise ModelSpecError(f"site {name!r}: obs_mask must be a bool tensor, got {obs_mask.dtype}")
        self.obs_mask = obs_mask

    @property
    def unobserved_name(self) -> str:
        """Name of the latent site holding the masked entries."""
        return f"{self.name}_unobserved"


class Deterministic(Step):
    """A deterministic value ``name = fn(...)``, recorded in traces and predictions."""

    kind = "deterministic"


class Factor(Step):
    """An extra log-density term ``fn(...)`` added to the log joint (Pyro's ``factor``).

    ``fn`` returns a tensor of shape ``sample_shape + batch_shape`` (or anything that
    broadcasts to it); it is summed over the plate dimensions and scaled like a site.
    """

    kind = "factor"


class Param:
    """A learnable model parameter with a constraint (Pyro's ``param``).

    Stored unconstrained, as ``biject_to(constraint).inv(init)``, in an
    ``nn.Parameter`` of the program; steps receive the constrained value.

    Parameters
    ----------
    name : str
        Parameter name (an identifier unique among the program's sites).
    init : torch.Tensor or float
        Initial constrained value; its shape is the parameter's shape.
    constraint : torch.distributions.constraints.Constraint
        Support of the parameter (default ``constraints.real``).

    Raises
    ------
    ModelSpecError
        If the name is not an identifier or ``init`` is outside the constraint.
    """

    kind = "param"
    plates: tuple[Plate, ...] = ()
    deps: tuple[str, ...] = ()

    def __init__(
        self,
        name: str,
        init: torch.Tensor | float,
        constraint: constraints.Constraint = constraints.real,
    ) -> None:
        check_identifier(name, "param")
        init = torch.as_tensor(init, dtype=torch.get_default_dtype())
        if not bool(constraint.check(init).all()):
            raise ModelSpecError(f"param {name!r}: init value is outside its constraint {constraint}")
        self.name = name
        self.init = init
        self.constraint = constraint

    def __repr__(self) -> str:
        return f"Param({self.name!r}, shape={tuple(self.init.shape)}, constraint={self.constraint})"
