"""Program surgery: new programs made from a program by ``condition``, ``do``, ``mask`` and
``scale`` (Pyro's ``poutine.condition``, ``poutine.do``, ``poutine.mask``,
``poutine.scale``; NumPyro's ``handlers``).

A derived program shares the original's parameters and submodules (training one trains
the other) and has its own copy of the step list, with the named sites changed:

- ``condition(values)``: the latent sites become observed, at the given values;
- ``do(values)``: each site's value is fixed and its density dropped (an intervention:
  the site becomes a deterministic step, so nothing upstream learns from it);
- ``mask(site, mask)``: the site's log-density counts only where ``mask`` is ``True``;
- ``scale(site, factor)``: the site's log-density is multiplied by ``factor``;
- ``reparam(config)``: each named latent site is rewritten by a reparameteriser
  (:mod:`quivers.program.reparam`).

Every surgery is checked when it is made (the site exists and has the right kind, the
value or tensor fits the site's plates) and raises before anything is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import BatchError, ModelSpecError
from ..shapes import fmt_shape
from .batch import PreparedBatch
from .markov import Markov
from .program import MonadicProgram
from .reparam import JointReparam, Reparam
from .steps import Deterministic, Latent, Observed, Param, Step

__all__ = ["DerivedProgram", "derive"]


class _Fixed:
    """A step function returning a buffer of the derived program (so the value follows
    ``.to(device)``)."""

    def __init__(self, program: Any, buffer: str) -> None:
        self.program, self.buffer = program, buffer

    def __call__(self) -> torch.Tensor:
        return getattr(self.program, self.buffer)


def derive(program: MonadicProgram, *, condition: Mapping[str, Any] | None = None,
           do: Mapping[str, Any] | None = None, mask: Mapping[str, Any] | None = None,
           scale: Mapping[str, Any] | None = None, reparam: Mapping[str, Reparam] | JointReparam | None = None,
           ) -> DerivedProgram:
    """The program with the given surgeries applied (see the module docstring).

    Raises
    ------
    ModelSpecError
        On an unknown site, a site of the wrong kind (``condition`` takes latent sites;
        ``do`` latent or observed sites; ``mask`` and ``scale`` latent, observed or
        factor sites; ``reparam`` latent sites not marked for enumeration), a value that
        is not a real tensor, a mask that is not boolean, a scale that is not finite and
        >= 0, a tensor whose shape does not fit the site's plates, or a reparameteriser
        that is not a :class:`~quivers.program.reparam.Reparam`; before anything is built.
    """
    fixed, dos, weights = _current(program)
    device = program.device_of()
    replaced: dict[str, Step] = {}
    for name, value in (condition or {}).items():
        step = _site(program, name, "condition", (Latent,))
        fixed[name] = _as_value(name, value, "condition").to(device)
        replaced[name] = Observed(name, step.fn, plate=step.plates)
    for name, value in (do or {}).items():
        _site(program, name, "do", (Latent, Observed))
        dos[name] = _as_value(name, value, "do").to(device)
        fixed.pop(name, None)
    for what, values in (("mask", mask or {}), ("scale", scale or {})):
        for name, t in values.items():
            step = _site(program, name, what, (Latent, Observed, Step))
            t = _check_weight(program, step, t, what)
            t = t.to(device) if isinstance(t, torch.Tensor) else t
            old = weights.setdefault(name, {}).get(what)
            if old is not None:  # applied twice: the masks intersect, the scales multiply
                t = (old & t) if what == "mask" else old * t
            weights[name][what] = t
    joint = reparam if isinstance(reparam, JointReparam) else None
    expanded: dict[str, list[Step | Param]] = {}
    for name, r in ({} if joint is not None else reparam or {}).items():
        step = _site(program, name, "reparam", (Latent,))
        if not isinstance(r, Reparam):
            raise ModelSpecError(f"reparam: site {name!r}: expected a Reparam (LocScaleReparam, TransformReparam, "
                                 f"...), got {type(r).__name__}")
        if getattr(step, "enumerate", None) is not None:
            raise ModelSpecError(f"reparam: site {name!r} is marked for enumeration, which sums it out exactly")
        expanded[name] = r.apply(program, step)
    steps: list[Step | Param] = []
    for s in program._steps.values():
        steps.extend(expanded.get(s.name) or [replaced.get(s.name, s)])
    if joint is not None:
        steps = joint.rewrite(program, steps)
    return DerivedProgram(program, steps, fixed, dos, weights)


class DerivedProgram(MonadicProgram):
    """A program made by surgery on another (see :mod:`quivers.program.surgery`).

    Built by :meth:`MonadicProgram.condition`, :meth:`~MonadicProgram.do`,
    :meth:`~MonadicProgram.mask` and :meth:`~MonadicProgram.scale`, not directly.

    Attributes
    ----------
    root : MonadicProgram
        The program the surgeries started from; its parameters and submodules are this
        program's (shared, not copied), as are those of the program this one was made
        from.
    """

    def __init__(self, source: MonadicProgram, steps: list[Step | Param], fixed: Mapping[str, torch.Tensor],
                 do: Mapping[str, torch.Tensor], weights: Mapping[str, Mapping[str, Any]]) -> None:
        super().__init__()
        self.root = getattr(source, "root", source)
        self._do_names = tuple(do)
        built = []
        for s in steps:
            if s.name in do:  # an intervention: a deterministic step reading a buffer
                self.register_buffer(f"_do_{s.name}", do[s.name])
                s = Deterministic(s.name, _Fixed(self, f"_do_{s.name}"))
            built.append(s)
        self.declare(*built)
        # the source's parameters are shared (training this program trains them); params
        # new here (a learned centeredness) are this program's own
        device = source.device_of()
        self._params = nn.ParameterDict({n: source._params[n] if n in source._params
                                         else nn.Parameter(p.detach().to(device)) for n, p in self._params.items()})
        self._fixed_names = tuple(fixed)
        for name, v in fixed.items():
            self.register_buffer(f"_condition_{name}", v)
        self._weights: dict[str, tuple[str | None, str | float | None]] = {}
        for name, w in weights.items():
            m = s_ = None
            if w.get("mask") is not None:
                m = f"_mask_{name}"
                self.register_buffer(m, w["mask"])
            if w.get("scale") is not None:
                sc = w["scale"]
                if isinstance(sc, torch.Tensor):
                    s_ = f"_scale_{name}"
                    self.register_buffer(s_, sc)
                else:
                    s_ = float(sc)
            self._weights[name] = (m, s_)

    def prepare(self, batch: Mapping[str, Any] | None, subsample: bool = True) -> Any:
        """As :meth:`MonadicProgram.prepare`, with the conditioned sites' values added.

        Raises
        ------
        BatchError
            As :meth:`MonadicProgram.prepare`, and when the batch gives a value for a
            site this program conditions on a fixed value.
        """
        if isinstance(batch, PreparedBatch) or not self._fixed_names:
            return super().prepare(batch, subsample)
        batch = dict(batch or {})
        for name in self._fixed_names:
            if name in batch:
                raise BatchError(f"batch field {name!r}: this program conditions site {name!r} on a fixed value "
                                 "(condition()); leave it out of the batch")
            batch[name] = getattr(self, f"_condition_{name}")
        return super().prepare(batch, subsample)


def _current(program: MonadicProgram) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                                              dict[str, dict[str, Any]]]:
    """A derived program's conditioned values, interventions and per-site masks and scales,
    read from its buffers (so they are where ``.to()`` moved them); empty for others."""
    fixed = {n: getattr(program, f"_condition_{n}") for n in getattr(program, "_fixed_names", ())}
    dos = {n: getattr(program, f"_do_{n}") for n in getattr(program, "_do_names", ())}
    weights: dict[str, dict[str, Any]] = {}
    for name, (m, sc) in program._weights.items():
        w = weights.setdefault(name, {})
        if m is not None:
            w["mask"] = getattr(program, m)
        if sc is not None:
            w["scale"] = getattr(program, sc) if isinstance(sc, str) else sc
    return fixed, dos, weights


# ---------------------------------------------------------------------- checks
def _site(program: Any, name: str, what: str, kinds: tuple[type, ...]) -> Step:
    step = program._steps.get(name) if isinstance(name, str) else None
    if step is None:
        raise ModelSpecError(f"{what}: {name!r} is not a site of {type(program).__name__}; its sites are "
                             f"{[n for n, s in program._steps.items() if not isinstance(s, Param)]}")
    if not isinstance(step, kinds) or isinstance(step, (Param, Deterministic)):
        expected = {"condition": "latent", "do": "latent or observed"}.get(what, "latent, observed or factor")
        raise ModelSpecError(f"{what}: site {name!r} is {type(step).__name__}; {what} takes {expected} sites")
    if isinstance(step, Markov):
        raise ModelSpecError(f"{what}: site {name!r} is a Markov chain site, which {what} does not support")
    return step


def _as_value(name: str, value: Any, what: str) -> torch.Tensor:
    try:
        v = torch.as_tensor(value)
    except Exception as e:  # noqa: BLE001
        raise ModelSpecError(f"{what}: the value of site {name!r} is not a tensor or an array of numbers ({e})") from e
    if v.is_complex():
        raise ModelSpecError(f"{what}: the value of site {name!r} is complex")
    if v.is_floating_point() and not isinstance(value, torch.Tensor):
        v = v.to(torch.get_default_dtype())
    return v.detach().clone()


def _check_weight(program: Any, step: Step, t: Any, what: str) -> torch.Tensor | float:
    """A mask (bool tensor) or a scale (number or tensor, finite, >= 0) that fits the
    site's plates: right-aligned with the batch dims, with the plate's size or 1 along
    each of the site's plates' dims and 1 elsewhere."""
    name = step.name
    if what == "scale" and not isinstance(t, torch.Tensor):
        try:
            f = float(t)
        except (TypeError, ValueError) as e:
            raise ModelSpecError(f"scale: site {name!r}: the factor must be a number or a tensor, got "
                                 f"{type(t).__name__}") from e
        if not (f >= 0 and f != float("inf")):
            raise ModelSpecError(f"scale: site {name!r}: the factor must be finite and >= 0, got {f}")
        return f
    t = torch.as_tensor(t)
    if what == "mask" and t.dtype != torch.bool:
        raise ModelSpecError(f"mask: site {name!r}: the mask must be a bool tensor, got {t.dtype}")
    if what == "scale":
        if not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
        if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
            raise ModelSpecError(f"scale: site {name!r}: the factor must be finite and >= 0 everywhere")
    owned = {program.plate_dim(p.name): p for p in step.plates}
    depth = max((-d for d in owned), default=0)
    if t.dim() > depth:
        raise ModelSpecError(f"{what}: site {name!r}: the tensor has shape {fmt_shape(t.shape)}, more dims than the "
                             f"site's {depth} batch dim(s) (plates {[p.name for p in step.plates]})")
    for k in range(1, t.dim() + 1):
        n, p = t.shape[-k], owned.get(-k)
        want = (p.size if p is not None else 1)
        if n != 1 and want is not None and n != want:
            where = f"plate {p.name!r} (size {want})" if p is not None else "no plate of the site (size 1)"
            raise ModelSpecError(f"{what}: site {name!r}: the tensor has shape {fmt_shape(t.shape)}, {n} entries "
                                 f"along dim {-k}, which belongs to {where}; expected 1 or {want}")
    return t.detach().clone()
