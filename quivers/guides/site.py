"""``LatentSite``: one latent site as guides see it (shapes, support, transform, plates)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributions import Distribution, Transform, constraints

from ..program import Plate

__all__ = ["LatentSite", "has_tensor_parameters", "tensor_like"]


@dataclass
class LatentSite:
    """One latent site as guides see it.

    Attributes
    ----------
    name : str
        Site name.
    batch_shape, event_shape : torch.Size
        Full (not subsampled) constrained shapes, trace layout.
    support : Constraint
        The prior's support (for a dynamic site: at the upstream values this view was
        made for).
    transform : Transform
        ``biject_to(support)``: unconstrained -> constrained.
    unconstrained_shape : torch.Size
        ``transform.inverse_shape(batch_shape + event_shape)``.
    plates : tuple of Plate
        Plates the site sits in.
    plate_dims : dict of str to int
        For each plate, the (negative) dimension of the *unconstrained* value it owns.
    offset : int
        Start of the site's slice in the flat unconstrained vector.
    prior : Distribution
        The prior (for init strategies: at the upstream sites' initial values); not saved.
    dynamic : bool
        Whether the support depends on other sites or params (see the module docstring).
    """

    name: str
    batch_shape: torch.Size
    event_shape: torch.Size
    support: object
    transform: Transform | None
    unconstrained_shape: torch.Size
    plates: tuple[Plate, ...]
    plate_dims: dict[str, int]
    offset: int
    prior: Distribution
    dynamic: bool = False

    @property
    def shape(self) -> torch.Size:
        """Constrained shape ``batch_shape + event_shape``."""
        return self.batch_shape + self.event_shape

    @property
    def numel(self) -> int:
        """Number of unconstrained coordinates."""
        return self.unconstrained_shape.numel()

    @property
    def unconstrained_event_ndim(self) -> int:
        """Event rank of the unconstrained value."""
        return len(self.unconstrained_shape) - len(self.batch_shape)

    @property
    def is_real(self) -> bool:
        """Whether the support is the real line (or ``independent(real, n)``): the
        unconstrained and constrained values coincide."""
        c = self.support
        while isinstance(c, constraints.independent):
            c = c.base_constraint
        return c is constraints.real

    @property
    def is_local(self) -> bool:
        """Whether the site sits in a plate that can be subsampled."""
        return any(p.subsample_size is not None for p in self.plates)


def has_tensor_parameters(c: object) -> bool:
    """Whether a constraint carries tensor parameters (an interval's bounds, say), which
    may depend on other sites."""
    for v in vars(c).values():
        if isinstance(v, torch.Tensor) or (isinstance(v, constraints.Constraint) and has_tensor_parameters(v)):
            return True
    return False


def tensor_like(d: Distribution) -> dict[str, torch.dtype | torch.device]:
    """``{"dtype", "device"}`` of a distribution's first floating-point tensor parameter
    (searching base distributions too), for tensors made to go with it; ``{}`` when it has
    none (``ImproperUniform``)."""
    for v in vars(d).values():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return {"dtype": v.dtype, "device": v.device}
        if isinstance(v, Distribution):
            found = tensor_like(v)
            if found:
                return found
    return {}
