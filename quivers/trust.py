"""What a spec read from a file may name: data is never code unless the user trusts it.

A checkpoint records how to rebuild its model, guide, objective and optimizer as
``class_path`` + ``init_args`` (:mod:`quivers.spec`). Rebuilding imports the paths and
calls what they name, so a file from elsewhere could name ``os.system``. A
:class:`SpecPolicy` checks a whole spec *before anything is imported or called*:

* every path must live in an allowed module (``quivers``, ``torch.optim``, ``torch.nn``,
  ``torch.distributions``, ``zuko``) or in a module the user trusts explicitly; the
  modules of any other path are never imported;
* a ``class_path`` must name a subclass of the kind its slot expects (``MonadicProgram``
  for the model, ``Guide`` for the guide, the objectives' ``ELBO``, ``torch.optim.Optimizer``
  for the optimizer; an ``nn.Module``, ``torch.distributions`` transform or distribution
  for an argument);
* any other callable must be such a class or one of quivers' init strategies.

Anything else is a :class:`~quivers.errors.CheckpointError` naming the file, the key and
how to trust the module: ``SVIModule.load_from_checkpoint(path, trusted=("mypackage",))``,
or ``--model.trusted '[mypackage]'`` on the command line. Trust is never the default and
never read from the file. While a policy rebuilds a spec it is *active*
(:func:`resolve_path`), so constructors that import a path given as a string (a guide's
``init_loc_fn="quivers.guides.init_to_mean"``) obey it too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.distributions import Distribution, Transform

from .errors import CheckpointError
from .spec import _CONSTRAINTS, SpecError, import_path

__all__ = ["SAFE_MODULES", "SpecPolicy", "resolve_path"]

SAFE_MODULES = ("quivers", "torch.optim", "torch.nn", "torch.distributions", "zuko")
ARGUMENT_KINDS: tuple[type, ...] = (nn.Module, Transform, Distribution)

_ACTIVE: ContextVar[SpecPolicy | None] = ContextVar("quivers_spec_policy", default=None)


def _safe_functions() -> set[Any]:
    from .guides import initialization as init

    return {getattr(init, n) for n in init.__all__ if n.startswith("init_to_")}


def _under(module: str, prefixes: Sequence[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@dataclass(frozen=True)
class SpecPolicy:
    """The objects a spec from ``source`` may name (see the module docstring).

    Parameters
    ----------
    trusted : tuple of str
        Module prefixes the user trusts: any class or function in them may be named
        (top-level slots still need their kind).
    source : str
        What the spec came from, for messages (``"checkpoint runs/m.ckpt"``).
    """

    trusted: tuple[str, ...] = ()
    source: str = "spec"

    def allows(self, module: str) -> bool:
        """Whether ``module`` may be imported."""
        return _under(module, SAFE_MODULES) or _under(module, self.trusted)

    def _refuse(self, key: str, path: str, why: str) -> CheckpointError:
        module = path.rsplit(".", 1)[0] if "." in path else path
        top = module.split(".")[0]
        return CheckpointError(
            f"{self.source}: {key} names {path!r}, which {why}; nothing it names was imported or called. "
            f"If you trust this file's code, trust its module explicitly: "
            f"SVIModule.load_from_checkpoint(path, trusted=({top!r},)), or --model.trusted '[{top}]' on the "
            "command line"
        )

    def resolve(self, path: Any, key: str, kinds: tuple[type, ...] | None = None) -> Any:
        """Import ``path`` from an allowed module and check what it names.

        Parameters
        ----------
        path : str
            ``module.QualName``.
        key : str
            Where the path sits (``"model.class_path"``), for messages.
        kinds : tuple of type, optional
            The classes a slot accepts (a subclass of one). ``None``: an argument, which
            may be a class of :data:`ARGUMENT_KINDS` or an init strategy, or anything in a
            trusted module.

        Raises
        ------
        CheckpointError
            If the module is not allowed, nothing importable lives there, or the object
            is not of the kind the slot expects.
        """
        if not isinstance(path, str) or not path:
            raise CheckpointError(f"{self.source}: {key} must be an import path (a string), got {path!r}")
        parts = path.split(".")
        candidates = [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
        if not any(self.allows(m) for m in candidates):
            raise self._refuse(key, path, "is not in " + ", ".join(SAFE_MODULES) + " nor in a trusted module")
        try:
            obj = import_path(path, allowed=self.allows)
        except SpecError:
            raise CheckpointError(f"{self.source}: {key} names {path!r}, which cannot be imported") from None
        trusted = _under(getattr(obj, "__module__", "") or "", self.trusted) or any(
            _under(m, self.trusted) for m in candidates)
        if kinds is not None and not (trusted and kinds is ARGUMENT_KINDS):
            if not (isinstance(obj, type) and issubclass(obj, kinds)):
                names = " or ".join(k.__name__ for k in kinds)
                raise self._refuse(key, path, f"is not a {names} class")
            return obj
        if trusted or (isinstance(obj, type) and issubclass(obj, ARGUMENT_KINDS)) or obj in _safe_functions():
            return obj
        raise self._refuse(key, path, "is not an nn.Module, transform or distribution class, nor an init strategy")

    def check(self, spec: Any, key: str, kinds: tuple[type, ...] | None = None) -> None:
        """Resolve every path in a spec (see :func:`quivers.spec.to_spec` for the format)
        without calling anything.

        Raises
        ------
        CheckpointError
            At the first path the policy refuses, or an entry that is not spec data.
        """
        if isinstance(spec, list):
            for i, v in enumerate(spec):
                self.check(v, f"{key}[{i}]")
            return
        if not isinstance(spec, Mapping):
            return
        if "tensor" in spec:
            return
        if "constraint" in spec:
            if spec["constraint"] not in _CONSTRAINTS:
                raise CheckpointError(f"{self.source}: {key} names an unknown constraint {spec['constraint']!r}")
            return
        if "dict" in spec:
            for k, v in dict(spec["dict"]).items():
                self.check(v, f"{key}.{k}")
            return
        if "callable" in spec:
            self.resolve(spec["callable"], key)
            return
        if "partial" in spec:
            self.resolve(spec["partial"], f"{key}.partial")
            self.check(spec.get("args", []), f"{key}.args")
            self.check(spec.get("kwargs", {}), f"{key}.kwargs")
            return
        if "class_path" in spec:
            self.resolve(spec["class_path"], f"{key}.class_path", kinds or ARGUMENT_KINDS)
            for k, v in dict(spec.get("init_args") or {}).items():
                self.check(v, f"{key}.init_args.{k}")
            return
        for k, v in spec.items():  # a plain mapping of arguments
            self.check(v, f"{key}.{k}")

    @contextlib.contextmanager
    def active(self) -> Iterator[SpecPolicy]:
        """Make this policy the one :func:`resolve_path` applies while rebuilding."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)


def resolve_path(path: str, key: str, kinds: tuple[type, ...] | None = None) -> Any:
    """Import a path given as a string to a constructor: under an active
    :class:`SpecPolicy` (rebuilding from a file) only what it allows, otherwise (user
    code) anything importable.

    Raises
    ------
    CheckpointError
        Under a policy that refuses the path.
    SpecError
        If nothing importable lives at ``path``.
    """
    policy = _ACTIVE.get()
    return policy.resolve(path, key, kinds) if policy is not None else import_path(path)
