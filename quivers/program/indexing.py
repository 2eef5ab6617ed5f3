"""``vindex``: index a table by discrete values whose batch dims broadcast with the table's.

Step functions see values in the trace layout, and under enumeration a discrete site's
value carries extra dimensions on the left (one per enumerated site), so ``table[z]``
(which puts ``z``'s dims in front of the table's) is wrong there. ``vindex`` is Pyro's
``Vindex(table)[..., z]`` / ``Vindex(table)[..., z, :]`` for one index.
"""

from __future__ import annotations

import torch

from ..errors import ShapeError
from ..shapes import fmt_shape

__all__ = ["vindex"]


def vindex(table: torch.Tensor, index: torch.Tensor, event_dim: int = 0) -> torch.Tensor:
    """``out[b..., e...] = table[b..., index[b...], e...]`` with the batch dims ``b`` of
    ``table`` and ``index`` broadcast (right-aligned).

    Parameters
    ----------
    table : torch.Tensor
        Shape ``batch + (K,) + event`` with ``len(event) == event_dim``: for example the
        component means ``(..., K)`` (``event_dim=0``) or a transition matrix ``(..., K, K)``
        whose rows are selected (``event_dim=1``).
    index : torch.Tensor
        Integer values in ``[0, K)`` (floats holding integers, as ``Bernoulli`` gives, are
        accepted), any shape that broadcasts with ``batch``.
    event_dim : int
        How many trailing dims of ``table`` follow the indexed one.

    Returns
    -------
    torch.Tensor
        Shape ``broadcast(batch, index.shape) + event``.

    Raises
    ------
    ShapeError
        If ``table`` has fewer than ``event_dim + 1`` dims or the batch shapes do not
        broadcast.
    """
    if table.dim() < event_dim + 1:
        raise ShapeError(f"vindex: table of shape {fmt_shape(table.shape)} has no dim to index left of its "
                         f"{event_dim} event dim(s)")
    split = table.dim() - event_dim - 1
    event, k = table.shape[split + 1:], table.shape[split]
    try:
        batch = torch.broadcast_shapes(table.shape[:split], index.shape)
    except RuntimeError:
        raise ShapeError(f"vindex: the table's batch shape {fmt_shape(table.shape[:split])} and the index's shape "
                         f"{fmt_shape(index.shape)} do not broadcast") from None
    nb = len(batch)
    idx = index.long().expand(batch).reshape(batch + (1,) * (event_dim + 1))
    full = table.expand(batch + (k,) + event)
    return full.gather(nb, idx.expand(batch + (1,) + event)).squeeze(nb)
