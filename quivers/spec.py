"""Recording how to rebuild objects: ``class_path`` + ``init_args``, as LightningCLI does.

Step specs hold lambdas, which do not pickle, so checkpoints never pickle models or
guides. Instead every :class:`Recordable` object (programs, guides, objectives)
remembers the arguments of its outermost constructor call, and :func:`to_spec` turns
them into plain data (dicts, lists, strings, numbers): safe to store in a checkpoint, to
load with ``torch.load(weights_only=True)``, and to write as YAML. :func:`from_spec`
rebuilds the object by importing ``class_path`` and calling it; a spec read from a file is
checked first by a :class:`quivers.trust.SpecPolicy`, which refuses code the user has not
trusted.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.distributions import constraints

from .errors import QuiversError

__all__ = ["Recordable", "SpecError", "to_spec", "from_spec", "import_path", "object_path", "check_arguments"]


class SpecError(QuiversError):
    """An object cannot be recorded as, or rebuilt from, a spec."""


class Recordable:
    """Mixin that records the arguments of the outermost ``__init__`` call.

    After construction, ``obj.init_spec()`` returns ``{"class_path": ..., "init_args": ...}``
    with the arguments bound to parameter names (defaults included).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_quivers_records", False):
            return

        @functools.wraps(init)
        def __init__(self, *args: Any, **kw: Any) -> None:
            outer = "_quivers_init_args" not in self.__dict__
            if outer:
                self.__dict__["_quivers_init_args"] = None  # claim: inner super() calls skip
            init(self, *args, **kw)
            if outer:
                bound = inspect.signature(init).bind(self, *args, **kw)
                bound.apply_defaults()
                params = dict(bound.arguments)
                params.pop(next(iter(params)))  # self
                self.__dict__["_quivers_init_args"] = params

        __init__._quivers_records = True  # type: ignore[attr-defined]
        cls.__init__ = __init__  # type: ignore[misc]

    def init_args(self) -> dict[str, Any]:
        """The recorded constructor arguments (live objects, not yet converted)."""
        args = self.__dict__.get("_quivers_init_args")
        return dict(args) if args else {}

    def init_spec(
        self, exclude: tuple[str, ...] = (), on_error: Callable[[str, SpecError], None] | None = None,
    ) -> dict[str, Any]:
        """``{"class_path", "init_args"}`` of this object, as plain data.

        Parameters
        ----------
        exclude : tuple of str
            Arguments left out (for example a guide's ``model``).
        on_error : callable, optional
            Called as ``on_error(name, error)`` for an argument that cannot be recorded,
            which is then left out; without it such an argument raises.

        Raises
        ------
        SpecError
            If an argument cannot be recorded (a lambda, a local class, ...) and no
            ``on_error`` is given.
        """
        out = {}
        for k, v in self.init_args().items():
            if k in exclude:
                continue
            try:
                out[k] = to_spec(v)
            except SpecError as e:
                if on_error is None:
                    raise SpecError(f"{type(self).__name__}: argument {k!r} cannot be recorded: {e}") from e
                on_error(k, e)
        return {"class_path": object_path(type(self)), "init_args": out}


def object_path(obj: Any) -> str:
    """Import path ``module.QualName`` of a module-level class or function.

    Raises
    ------
    SpecError
        For lambdas, local definitions and objects without a module.
    """
    mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not mod or not qual or "<" in qual:
        raise SpecError(f"{obj!r} is not importable by path (a lambda or a local definition?)")
    return f"{mod}.{qual}"


def check_arguments(target: Any, names: Iterable[str], what: str, error: type[QuiversError] = SpecError,
                    skip: Iterable[str] = ()) -> None:
    """Check that ``target`` (a class or function) accepts every keyword in ``names``,
    before it is called.

    Parameters
    ----------
    target : callable
        The class or function the arguments go to.
    names : iterable of str
        Keyword argument names.
    what : str
        What the arguments configure, for the message (``"guide"``, ``"optimizer_kwargs"``).
    error : type
        The error class raised.
    skip : iterable of str
        Parameters supplied otherwise (``params`` of an optimizer, ``model`` of a guide),
        left out of the list of valid names.

    Raises
    ------
    QuiversError
        ``error``, naming the unknown argument, the target and its valid arguments.
    """
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # no signature to check (some builtins)
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if n not in ("self", *skip)
             and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    unknown = [n for n in names if n not in valid]
    if unknown:
        name = getattr(target, "__qualname__", repr(target))
        raise error(f"{what}: {name} takes no argument {unknown[0]!r}; its arguments are {valid}")


def import_path(path: str, allowed: Callable[[str], bool] | None = None) -> Any:
    """Import ``module.QualName`` (the inverse of :func:`object_path`).

    Parameters
    ----------
    path : str
        ``module.QualName``.
    allowed : callable, optional
        ``allowed(module_name)``: modules it refuses are never imported (see
        :class:`quivers.trust.SpecPolicy`).

    Raises
    ------
    SpecError
        If nothing importable (and allowed) lives at ``path``.
    """
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:i])
        if allowed is not None and not allowed(module):
            continue
        try:
            obj = importlib.import_module(module)
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise SpecError(f"cannot import {path!r}")


_CONSTRAINTS = {
    name: c for name, c in vars(constraints).items() if isinstance(c, constraints.Constraint)
}


def to_spec(obj: Any) -> Any:
    """Convert an argument to plain data (see the module docstring).

    Handles ``None``, bools, numbers, strings, lists, tuples, string-keyed dicts,
    tensors (``{"tensor": nested list, "dtype": str}``), ``torch.Size``, importable
    classes and functions (``{"callable": path}``), ``functools.partial`` of those,
    the named ``torch.distributions.constraints`` singletons, and :class:`Recordable`
    objects.

    Raises
    ------
    SpecError
        For anything else.
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Size):
        return list(obj)
    if isinstance(obj, torch.Tensor):
        return {"tensor": obj.detach().cpu().tolist(), "dtype": str(obj.dtype).removeprefix("torch.")}
    if isinstance(obj, (list, tuple)):
        return [to_spec(v) for v in obj]
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise SpecError("dict keys must be strings")
        return {"dict": {k: to_spec(v) for k, v in obj.items()}}
    if isinstance(obj, Recordable):
        return obj.init_spec()
    if isinstance(obj, functools.partial):
        return {"partial": object_path(obj.func), "args": to_spec(list(obj.args)), "kwargs": to_spec(obj.keywords)}
    if isinstance(obj, constraints.Constraint):
        for name, c in _CONSTRAINTS.items():
            if c is obj:
                return {"constraint": name}
        raise SpecError(f"constraint {obj} is not a named singleton of torch.distributions.constraints")
    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return {"callable": object_path(obj)}
    raise SpecError(f"cannot record a {type(obj).__name__}")


def from_spec(spec: Any, **extra: Any) -> Any:
    """Rebuild an object from :func:`to_spec` output.

    ``extra`` keyword arguments are passed to the top-level constructor (for example
    the ``model`` of a guide).
    """
    if isinstance(spec, list):
        return [from_spec(v) for v in spec]
    if not isinstance(spec, dict):
        return spec
    if "tensor" in spec:
        return torch.tensor(spec["tensor"], dtype=getattr(torch, spec["dtype"]))
    if "dict" in spec:
        return {k: from_spec(v) for k, v in spec["dict"].items()}
    if "callable" in spec:
        return import_path(spec["callable"])
    if "partial" in spec:
        func = import_path(spec["partial"])
        kwargs = from_spec(spec["kwargs"])
        check_arguments(func, kwargs, spec["partial"])
        return functools.partial(func, *from_spec(spec["args"]), **kwargs)
    if "constraint" in spec:
        return _CONSTRAINTS[spec["constraint"]]
    if "class_path" in spec:
        cls = import_path(spec["class_path"])
        check_arguments(cls, [*spec.get("init_args", {}), *extra], spec["class_path"])
        args = {k: from_spec(v) for k, v in spec.get("init_args", {}).items()}
        return cls(**args, **extra)
    raise SpecError(f"not a spec: {spec!r}")
