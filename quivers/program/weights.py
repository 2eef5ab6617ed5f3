"""Per-site masks and scales of a program's log-density terms (set by
:meth:`~quivers.program.MonadicProgram.mask` and :meth:`~quivers.program.MonadicProgram.scale`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .steps import Step

__all__ = ["site_weight"]


def site_weight(program: Any, step: Step, lp: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``lp`` (shape ``... + batch_shape``) masked and scaled as ``program._weights`` says
    for ``step``: zero where the mask is ``False``, times the scale; the mask and a
    tensor scale are sliced to the batch's subsample indices along the site's plates."""
    mask_name, scale = program._weights[step.name]
    if mask_name is not None:
        m = _sliced(program, step, getattr(program, mask_name), batch)
        lp = torch.where(m, lp, torch.zeros((), dtype=lp.dtype, device=lp.device))
    if isinstance(scale, str):
        lp = lp * _sliced(program, step, getattr(program, scale), batch).to(lp.dtype)
    elif scale is not None:
        lp = lp * scale
    return lp


def _sliced(program: Any, step: Step, t: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``t`` sliced to the batch's subsample indices along the site's plates' dims."""
    for p in step.plates:
        if p.name in batch:
            dim = program.plate_dim(p.name)
            if t.dim() >= -dim and t.shape[dim] == p.size and t.shape[dim] > 1:
                t = t.index_select(dim, batch[p.name].to(t.device))
    return t
