"""Checking a ``declare(...)`` call and assigning plate dimensions, before anything changes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import ModelSpecError
from .plate import Plate
from .steps import Factor, Observed, Param, Step

if TYPE_CHECKING:
    from .program import MonadicProgram

__all__ = ["plan_declaration", "check_obs_mask"]


def plan_declaration(program: MonadicProgram, steps: Sequence[Step | Param]) -> tuple[dict[str, Plate], dict[str, int]]:
    """Check steps about to be declared and plan their plates.

    Returns
    -------
    plates : dict
        Every plate of the program after the declaration, by name.
    plan : dict
        The (negative) batch dim of each plate: given by ``Plate(dim=...)``, else
        ``-1, -2, ...`` in declaration order, skipping dims taken.

    Raises
    ------
    ModelSpecError
        On an object that is not a step spec, a duplicate name, a dependency on a name
        declared at or after the step, a site named like a plate, two plates of one
        name, a site in two plates that own the same dim, a step depending on a factor
        (a log-density term, not a value), or an ``obs_mask`` whose shape does not fit
        the site's plates.
    """
    new_names = [getattr(s, "name", None) for s in steps]
    for i, step in enumerate(steps):
        if not isinstance(step, (Step, Param)):
            raise ModelSpecError(
                f"declare: argument {i} is a {type(step).__name__}; expected Latent, "
                "Observed, Deterministic, Factor or Param"
            )
        if step.name in program._steps or step.name in new_names[:i]:
            raise ModelSpecError(f"site {step.name!r} is declared twice; site names must be unique")
        later = [d for d in step.deps if d in new_names[i:]]
        if later:
            raise ModelSpecError(
                f"site {step.name!r} depends on {later[0]!r}, which is declared at or after it; "
                "a step may depend only on earlier sites or batch fields"
            )
        factors = [d for d in step.deps if isinstance(program._steps.get(d), Factor)
                   or any(isinstance(s, Factor) and s.name == d for s in steps[:i])]
        if factors:
            raise ModelSpecError(
                f"site {step.name!r} depends on factor {factors[0]!r}: a factor adds a log-density term and has "
                "no value to depend on; compute the quantity in a Deterministic step and use it in both"
            )
        earlier = [n for n, s in program._steps.items() if step.name in s.deps]
        if earlier:
            raise ModelSpecError(f"site {earlier[0]!r} depends on {step.name!r}, which is declared after it")
    plan = dict(program._plate_dims)
    plates = dict(program._plates)
    for step in steps:
        for p in step.plates:
            _register_plate(program, p, plates, plan)
        dims = [plan[p.name] for p in step.plates]
        if len(set(dims)) != len(dims):
            raise ModelSpecError(
                f"site {step.name!r} sits in plates {[p.name for p in step.plates]}, two of which own "
                f"the same dim; nested plates need distinct dims"
            )
    for step in steps:
        if isinstance(step, Observed) and step.obs_mask is not None:
            check_obs_mask(step, plan)
    clash = [n for n in new_names if n in plates]
    if clash:
        raise ModelSpecError(f"site {clash[0]!r} has the name of a plate; rename the site or the plate")
    return plates, plan


def _register_plate(program: MonadicProgram, p: Plate, plates: dict[str, Plate], plan: dict[str, int]) -> None:
    if p.name in plates:
        if plates[p.name] is not p:
            raise ModelSpecError(f"two different plates are named {p.name!r}")
        return
    if p.name in program._steps:
        raise ModelSpecError(f"plate {p.name!r} has the name of a site")
    if p.dim is not None:  # sibling plates may share a dim; a site in both is refused in declare
        dim = p.dim
    else:
        dim = -1
        while dim in plan.values():
            dim -= 1
    plates[p.name] = p
    plan[p.name] = dim


def check_obs_mask(step: Observed, plan: dict[str, int], sizes: dict[str, int] | None = None) -> None:
    """Check ``step.obs_mask`` against the site's plates: right-aligned with the batch
    dims, it has each plate's size along that plate's dim (``sizes`` overrides plate
    sizes, for ``set_plate_size``) and size 1 along dims that belong to no plate of the site.

    Raises
    ------
    ModelSpecError
        Naming the site, the dim and what was expected.
    """
    mask, sizes = step.obs_mask, sizes or {}
    owned = {plan[p.name]: p for p in step.plates}
    depth = max((-d for d in owned), default=0)
    if mask.dim() > depth:
        raise ModelSpecError(
            f"site {step.name!r}: obs_mask has shape {tuple(mask.shape)}, more dims than the site's {depth} batch "
            f"dim(s) (plates {[p.name for p in step.plates]}); the mask has the site's batch shape"
        )
    for k in range(1, mask.dim() + 1):
        n, p = mask.shape[-k], owned.get(-k)
        want = sizes.get(p.name, p.size) if p is not None else 1
        if want is not None and n != want:
            where = f"plate {p.name!r} (size {want})" if p is not None else "no plate of the site (size 1)"
            raise ModelSpecError(
                f"site {step.name!r}: obs_mask has shape {tuple(mask.shape)}, {n} entries along dim {-k}, which "
                f"belongs to {where}; the mask has the site's batch shape"
            )
