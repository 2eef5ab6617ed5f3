"""``IterateAverage``: the running mean of parameters over optimisation steps."""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["IterateAverage"]


class IterateAverage:
    """Equal-weight running mean of parameters over steps (Polyak & Juditsky 1992).

    After ``n`` calls of :meth:`update` (the construction counts as the first), each
    average is the mean of the parameter's ``n`` values, updated as
    ``mean += (value - mean) / n``: the arithmetic of ``torch.optim.swa_utils``'s
    ``get_swa_multi_avg_fn``, as one ``torch._foreach_lerp_`` call over every tensor.
    ``AveragedModel.update_parameters`` does the same but walks the parameters in Python on
    every step (detach, device move, grouping), which costs more than a flow guide's whole
    compiled step; this keeps the detached lists once.

    Parameters
    ----------
    params : iterable of Tensor
        The parameters to average (their current values are the first term). Each
        average has its parameter's shape, dtype and device.
    """

    def __init__(self, params: Iterable[torch.Tensor]) -> None:
        self._values = [p.detach() for p in params]
        self.averages = [v.clone() for v in self._values]
        self.count = 1

    @torch.no_grad()
    def update(self) -> None:
        """Add the parameters' current values to the mean."""
        self.count += 1
        if self._values:
            torch._foreach_lerp_(self.averages, self._values, 1.0 / self.count)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        """Overwrite the parameters with their averages."""
        if self._values:
            torch._foreach_copy_(self._values, self.averages)
