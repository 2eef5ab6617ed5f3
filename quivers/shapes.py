"""Shape helpers shared by programs, guides and objectives.

The convention (Pyro's and NumPyro's): a site's value has shape
``sample_shape + batch_shape + event_shape``, where ``batch_shape`` spans all of the
program's plate dimensions (the plate's size inside the plate, 1 outside it).
"""

from __future__ import annotations

import torch

__all__ = ["sum_rightmost", "reduce_to_sample", "broadcasts_to", "fmt_shape"]


def sum_rightmost(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum out the ``dim`` rightmost dimensions of ``x`` (no-op when ``dim <= 0``)."""
    if dim <= 0:
        return x
    return x.sum(tuple(range(x.dim() - dim, x.dim())))


def broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether ``shape`` broadcasts to exactly ``target`` (right-aligned, sizes 1 or equal).

    A pure-tuple check: ``torch.broadcast_shapes`` is much slower on this hot path.
    """
    if len(shape) > len(target):
        return False
    for a, b in zip(reversed(shape), reversed(target), strict=False):  # target may be longer
        if a != 1 and a != b:
            return False
    return True


def reduce_to_sample(x: torch.Tensor | float, sample_shape: torch.Size) -> torch.Tensor:
    """Sum every dimension of ``x`` right of ``sample_shape`` and broadcast to ``sample_shape``.

    ``x`` is a log-density term of shape ``sample_shape + rest`` or any shape that
    broadcasts to it from the right (a term that does not depend on the particles).
    """
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    n = len(sample_shape)
    extra = x.dim() - n
    if extra > 0:
        x = sum_rightmost(x, extra)
    elif extra < 0:
        x = x.reshape((1,) * (-extra) + x.shape)
    return x.expand(sample_shape) if x.shape != sample_shape else x


def fmt_shape(shape: torch.Size | tuple[int, ...]) -> str:
    """Format a shape the way error messages print it: ``(3, 4)``."""
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"
