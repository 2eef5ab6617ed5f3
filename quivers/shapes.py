"""Shape helpers shared by programs, guides and objectives.

Two layouts, one convention (Pyro's and NumPyro's):

* **trace layout**, used inside traces and objectives: a site's value has shape
  ``sample_shape + batch_shape + event_shape``, where ``batch_shape`` spans *all* of the
  program's plate dimensions (the plate's size inside the plate, 1 outside it), so step
  functions broadcast without reshaping;
* **site layout**, what users read back (``median``, ``quantiles``, ``sample_posterior``,
  ``Predictive``, summaries): ``sample_shape``, then only the dimensions from the site's
  outermost plate to the right (a site in a plate at dim -2 keeps ``(N, 1)``; a global
  scalar has shape ``()``), then the event shape.

:func:`to_site_layout` and :func:`to_trace_layout` convert between them; the number of
batch dimensions a site keeps is its *depth* (``MonadicProgram.site_depth``).
"""

from __future__ import annotations

import torch

__all__ = [
    "sum_rightmost", "reduce_to_sample", "broadcasts_to", "fmt_shape", "to_site_layout", "to_trace_layout",
]


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


def to_site_layout(value: torch.Tensor, sample_ndim: int, batch_ndim: int, depth: int,
                   strict: bool = True) -> torch.Tensor:
    """Drop the padding dimensions of a trace-layout value (see the module docstring).

    Parameters
    ----------
    value : torch.Tensor
        Shape ``sample_shape + batch_shape + event_shape`` with ``len(batch_shape) ==
        batch_ndim``.
    sample_ndim : int
        ``len(sample_shape)``.
    batch_ndim : int
        The program's number of plate dimensions.
    depth : int
        How many of the rightmost batch dimensions the site keeps.
    strict : bool
        ``True`` (latent and observed sites, whose layout is known): the
        ``batch_ndim - depth`` dimensions after ``sample_shape`` are dropped when they all
        have size 1; a value without them (a user guide may return the site's own
        layout) is returned unchanged. ``False`` (deterministic sites, whose layout a step
        function chose): drop at most that many leading size-1 dimensions after
        ``sample_shape``, and leave values with fewer dimensions unchanged.

    Returns
    -------
    torch.Tensor
        A view of shape ``sample_shape + batch_shape[batch_ndim - depth:] + event_shape``.
    """
    drop = batch_ndim - depth
    if drop <= 0:
        return value
    shape = value.shape
    if not strict:
        k = 0
        while k < drop and sample_ndim + k < len(shape) and shape[sample_ndim + k] == 1:
            k += 1
        drop = k
        if drop == 0:
            return value
    elif len(shape) < sample_ndim + drop or any(s != 1 for s in shape[sample_ndim: sample_ndim + drop]):
        return value  # no padding: already in the site's layout
    return value.reshape(shape[:sample_ndim] + shape[sample_ndim + drop:])


def to_trace_layout(value: torch.Tensor, sample_ndim: int, batch_ndim: int, depth: int) -> torch.Tensor:
    """Insert the ``batch_ndim - depth`` size-1 padding dimensions after ``sample_shape``
    (the inverse of :func:`to_site_layout`)."""
    pad = batch_ndim - depth
    if pad <= 0:
        return value
    shape = value.shape
    return value.reshape(shape[:sample_ndim] + (1,) * pad + shape[sample_ndim:])
