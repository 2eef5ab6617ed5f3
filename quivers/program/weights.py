"""Per-site masks and scales of a program's log-density terms (set by
:meth:`~quivers.program.MonadicProgram.mask` and :meth:`~quivers.program.MonadicProgram.scale`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .batch import slice_to_batch
from .steps import Step

__all__ = ["site_weight"]


def site_weight(program: Any, step: Step, lp: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``lp`` (shape ``... + batch_shape``) masked and scaled as ``program._weights`` says
    for ``step``: zero where the mask is ``False``, times the scale; the mask and a
    tensor scale are sliced to the batch's subsample indices along the site's plates."""
    mask_name, scale = program._weights[step.name]
    if mask_name is not None:
        m = slice_to_batch(program, step, getattr(program, mask_name), batch)
        lp = torch.where(m, lp, torch.zeros((), dtype=lp.dtype, device=lp.device))
    if isinstance(scale, str):
        lp = lp * slice_to_batch(program, step, getattr(program, scale), batch).to(lp.dtype)
    elif scale is not None:
        lp = lp * scale
    return lp

