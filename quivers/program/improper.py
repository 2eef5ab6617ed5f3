"""Improper flat prior over a constrained support."""

from __future__ import annotations

import torch
from torch.distributions import Distribution, constraints

__all__ = ["ImproperUniform"]


class ImproperUniform(Distribution):
    """Improper uniform (flat) distribution over ``support``, as Pyro's.

    Its log-density is 0 everywhere on the support: use it for Stan-style parameters
    without a prior. It cannot be sampled; guides initialise such sites with
    ``init_to_feasible`` (or ``init_to_uniform``) in unconstrained space.

    Parameters
    ----------
    support : torch.distributions.constraints.Constraint
        The support, e.g. ``constraints.real`` or ``constraints.positive``.
    batch_shape : torch.Size
        Batch shape of the distribution.
    event_shape : torch.Size
        Event shape of the distribution (the support's own event dims count here:
        ``constraints.simplex`` with ``event_shape=(3,)`` is a flat prior on the
        3-simplex).
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(
        self,
        support: constraints.Constraint,
        batch_shape: torch.Size | tuple[int, ...] = (),
        event_shape: torch.Size | tuple[int, ...] = (),
        validate_args: bool | None = None,
    ) -> None:
        event_shape = torch.Size(event_shape)
        batch_shape = torch.Size(batch_shape)
        if support.event_dim > len(event_shape):
            raise ValueError(
                f"ImproperUniform: support {support} has event_dim {support.event_dim} "
                f"but event_shape {tuple(event_shape)} has only {len(event_shape)} dims"
            )
        extra = len(event_shape) - support.event_dim
        self._support = constraints.independent(support, extra) if extra else support
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False)
    def support(self) -> constraints.Constraint:
        return self._support

    def expand(self, batch_shape, _instance=None) -> ImproperUniform:
        new = self._get_checked_instance(ImproperUniform, _instance)
        new._support = self._support
        Distribution.__init__(new, torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        shape = torch.broadcast_shapes(value.shape[: value.dim() - len(self.event_shape)], self.batch_shape)
        return torch.zeros(shape, dtype=value.dtype, device=value.device)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        raise NotImplementedError(
            "ImproperUniform is improper and cannot be sampled; use an init strategy "
            "such as init_to_feasible or init_to_uniform"
        )
