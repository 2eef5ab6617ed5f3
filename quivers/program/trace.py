"""Execution traces of a program: the value and log-density of every site."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch.distributions import Distribution, constraints

__all__ = ["Site", "Trace"]


@dataclass
class Site:
    """One site of a :class:`Trace`.

    Attributes
    ----------
    name : str
        Site name.
    kind : str
        ``"latent"``, ``"observed"``, ``"deterministic"``, ``"factor"`` or ``"param"``.
    value : torch.Tensor
        The site's value, shape ``sample_shape + batch_shape + event_shape``
        (observed data keeps its own shape, without ``sample_shape``).
    log_prob : torch.Tensor or None
        Scaled log-density summed over plates and event dims, shape ``sample_shape``;
        ``None`` for deterministic sites and params.
    fn : Distribution or None
        The site's distribution (latent and observed sites).
    support : Constraint or None
        The support of ``fn`` (or the constraint of a param).
    plates : tuple of str
        Names of the plates the site sits in.
    scale : float
        Subsampling scale applied to ``log_prob`` (``prod(size / batch_length)``).
    """

    name: str
    kind: str
    value: torch.Tensor
    log_prob: torch.Tensor | None = None
    fn: Distribution | None = None
    support: constraints.Constraint | None = None
    plates: tuple[str, ...] = field(default_factory=tuple)
    scale: float = 1.0


class Trace(OrderedDict):
    """Ordered mapping ``site name -> Site`` produced by ``MonadicProgram.trace``.

    Attributes
    ----------
    sample_shape : torch.Size
        The particle shape the trace was evaluated with.
    """

    def __init__(self, sample_shape: torch.Size = torch.Size()) -> None:
        super().__init__()
        self.sample_shape = torch.Size(sample_shape)

    def log_joint(self) -> torch.Tensor:
        """Sum of the scaled log-densities of all latent, observed and factor sites.

        Returns
        -------
        torch.Tensor
            Shape ``sample_shape``.
        """
        terms = [s.log_prob for s in self.values() if s.log_prob is not None]
        if not terms:
            ref = next((s.value for s in self.values() if isinstance(s.value, torch.Tensor)), None)
            kw = {"dtype": ref.dtype, "device": ref.device} if ref is not None and ref.is_floating_point() else {}
            return torch.zeros(self.sample_shape, **kw)
        return torch.stack(torch.broadcast_tensors(*terms)).sum(0)

    def values_of(self, kinds: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """``{name: value}`` for the sites of the given kinds (all when ``None``)."""
        return {n: s.value for n, s in self.items() if kinds is None or s.kind in kinds}

    def nonfinite_sites(self) -> list[str]:
        """Names of the sites whose log-density is not finite (NaN or +-inf)."""
        return [
            n for n, s in self.items()
            if s.log_prob is not None and not bool(torch.isfinite(s.log_prob).all())
        ]
