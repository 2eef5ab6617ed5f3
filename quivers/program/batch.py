"""Batches: validation, subsampling, and the subsample scale of a site.

A batch is a mapping of tensors: observed values by site name, program inputs by name,
and the subsample indices of a plate under the plate's name. :func:`prepare_batch` checks
it and draws indices for plates with ``subsample_size``; everything here is called
through :meth:`MonadicProgram.prepare`.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from ..errors import BatchError
from ..shapes import fmt_shape
from ..validation import is_validation_enabled
from .plate import Plate
from .steps import Observed

if TYPE_CHECKING:
    from .program import MonadicProgram

__all__ = ["PreparedBatch", "prepare_batch", "subsample_indices", "subsample_scale", "sliced_mask",
           "slice_to_batch"]


class PreparedBatch(dict):
    """A batch that :meth:`MonadicProgram.prepare` has validated and subsampled.

    Preparing is idempotent: a ``PreparedBatch`` passes through ``prepare`` unchanged,
    so an objective prepares once and hands the same batch to guide and model.

    Attributes
    ----------
    plate_rows : dict of str to int
        For each plate without subsample indices in the batch, the rows its fields hold
        (the plate's extent in a run on this batch).
    """

    plate_rows: dict[str, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        src = args[0] if args else None
        self.plate_rows = dict(getattr(src, "plate_rows", {}))


def prepare_batch(program: MonadicProgram, batch: Mapping[str, Any] | None, subsample: bool) -> PreparedBatch:
    """See :meth:`MonadicProgram.prepare`."""
    if isinstance(batch, PreparedBatch):
        return batch
    if batch is None:
        batch = {}
    if not isinstance(batch, Mapping):
        raise BatchError(f"a batch must be a mapping of field name -> tensor, got {type(batch).__name__}")
    key = _signature(program, batch, subsample)
    if key is not None:
        hit = program._checked.batch_plan
        if hit is not None and hit[0] == key and all(r() is v for r, v in zip(hit[1], batch.values(), strict=True)):
            out = PreparedBatch(batch)
            out.plate_rows = dict(hit[2])
            return out
    out = PreparedBatch()
    known = set(program.observed_names) | set(program.input_names) | set(program.plates) | set(program.latent_names)
    for k, v in batch.items():
        if is_validation_enabled() and k not in known:
            raise BatchError(
                f"batch field {k!r} is not used by the model; expected observed sites "
                f"{program.observed_names}, inputs {program.input_names} or plate indices {list(program.plates)}"
            )
        out[k] = _as_tensor(k, v)
    if is_validation_enabled():
        _validate_fields(program, out)
    validate = is_validation_enabled()
    for name, plate in program.plates.items():
        if name in out:
            _check_index(program, name, out[name])
        elif subsample and plate.subsample_size is not None:
            device = next((v.device for v in out.values()), None)
            idx = subsample_indices(plate.size, plate.subsample_size, device)
            for field, plates in _field_plates(program).items():
                if field in out and plate in plates:
                    out[field] = _select_rows(program, field, out[field], plate, plates, idx)
            out[name] = idx
        if name not in out:
            rows = _plate_rows(program, plate, out, validate)
            if rows is not None:
                out.plate_rows[name] = rows
        elif validate:
            _plate_rows(program, plate, out, True)
    if key is not None:
        program._checked.batch_plan = (key, [weakref.ref(v) for v in batch.values()], dict(out.plate_rows))
    return out


def _signature(program: MonadicProgram, batch: Mapping[str, Any], subsample: bool) -> tuple | None:
    """What a prepared batch depends on, when preparing it draws nothing: the fields'
    names, tensors (by identity, checked by the caller through weak references) and
    version counters, the validation switch, the program's declarations and, with
    validation on, its device. ``None`` when the batch cannot be reused: a field that is
    not a tensor (converted anew each time), an inference tensor (no version counter), or
    a plate whose subsample indices would be drawn.

    :func:`prepare_batch` keeps the last signature per program (in its
    :class:`~quivers.validation.ValidationCache`) with the plate rows it found and, for a
    batch fed again unchanged (full-batch training), rebuilds the same prepared batch
    without its checks: the plan of a batch signature. Only weak references are kept, so
    no data is held alive.
    """
    if subsample and any(p.subsample_size is not None and n not in batch for n, p in program.plates.items()):
        return None
    fields = []
    for k, v in batch.items():
        if not isinstance(v, torch.Tensor) or v.is_inference():
            return None
        fields.append((k, id(v), v._version))
    validate = is_validation_enabled()
    return (validate, subsample, len(program._steps), program.device_of(None) if validate else None, tuple(fields))


def _as_tensor(key: str, v: Any) -> torch.Tensor:
    if not isinstance(v, torch.Tensor):
        try:
            v = torch.as_tensor(v)
        except Exception as e:  # noqa: BLE001
            raise BatchError(
                f"batch field {key!r}: expected a tensor or an array of numbers, got a {type(v).__name__} "
                f"that torch.as_tensor cannot convert ({e})"
            ) from e
        if v.is_floating_point():
            v = v.to(torch.get_default_dtype())
    if v.layout != torch.strided:
        raise BatchError(
            f"batch field {key!r} is a {v.layout} tensor; expected a dense (strided) tensor: pass "
            f"batch[{key!r}].to_dense()"
        )
    if v.is_complex():
        raise BatchError(
            f"batch field {key!r} has dtype {v.dtype}; expected a real tensor (floating point, integer or "
            "bool): split complex data into real and imaginary fields"
        )
    return v


def _validate_fields(program: MonadicProgram, batch: Mapping[str, torch.Tensor]) -> None:
    checked = program._checked
    device = program.device_of(None)  # of the program's parameters and buffers, if it has any
    for k, v in batch.items():
        if device is not None and k not in program.plates and v.device != device:
            raise BatchError(
                f"batch field {k!r} is on {v.device} but the model's parameters and buffers are on {device}; "
                f"move the batch to the model's device ({{k: v.to({str(device)!r}) for k, v in batch.items()}})"
            )
        if k in program.plates or checked.seen(v, k):
            continue
        if v.numel() == 0:
            raise BatchError(f"batch field {k!r} is empty (shape {fmt_shape(v.shape)})")
        if v.is_floating_point():
            finite = torch.isfinite(v)
            step = program._steps.get(k)
            if isinstance(step, Observed) and step.obs_mask is not None:  # masked entries may hold NaN
                finite = finite | ~sliced_mask(program, step, batch)
            if not bool(finite.all()):
                n = int((~finite).sum())
                raise BatchError(
                    f"batch field {k!r} holds {n} non-finite value(s) (NaN or inf); "
                    "remove them or mark missing observations with Observed(..., obs_mask=...)"
                )
        checked.add(v, k)


def _check_index(program: MonadicProgram, name: str, idx: torch.Tensor) -> None:
    if idx.dtype not in (torch.int64, torch.int32) or idx.dim() != 1:
        raise BatchError(
            f"batch field {name!r} holds plate {name!r}'s subsample indices: expected a 1-D "
            f"integer tensor, got dtype {idx.dtype} and shape {fmt_shape(idx.shape)}"
        )
    size = program.plates[name].size
    if is_validation_enabled() and idx.numel() and (
        int(idx.min()) < 0 or (size is not None and int(idx.max()) >= size)
    ):
        raise BatchError(
            f"plate {name!r}: subsample indices must lie in [0, {size}), found range "
            f"[{int(idx.min())}, {int(idx.max())}]"
        )


def _plate_rows(program: MonadicProgram, plate: Plate, batch: Mapping[str, torch.Tensor],
                validate: bool) -> int | None:
    """The rows along ``plate`` of the batch fields in it (the subsample indices' count
    when the batch has them), checking with ``validate`` that the fields agree.

    Each field holds one entry per row along the plate's dim (:func:`field_dim`). The
    leading dim of a field holds the rows of its outermost plate and must match; an
    inner plate's dim may be 1, broadcasting along that plate.

    Raises
    ------
    BatchError
        Naming the fields that disagree, their sizes and the dim.
    """
    idx = batch.get(plate.name)
    expected = int(idx.shape[0]) if idx is not None else None
    source = f"its {expected} subsample indices in batch[{plate.name!r}]" if idx is not None else None
    for field, plates in _field_plates(program).items():
        v = batch.get(field)
        if v is None or plate not in plates:
            continue
        d = field_dim(program, v, plate, plates)
        if d is None:
            continue
        n = int(v.shape[d])
        if d > 0 and n == 1:  # broadcast along an inner plate
            continue
        if expected is None:
            expected, source = n, f"{field!r} has {n} along dim {d}"
        elif validate and n != expected:
            raise BatchError(
                f"batch fields of plate {plate.name!r} disagree on its rows: {source}, {field!r} has {n} along dim "
                f"{d} (shape {fmt_shape(v.shape)}); every field in the plate holds one entry per row along "
                "the plate's dim (its first dim for its outermost plate; an inner plate's dim may be 1)"
            )
    return expected


def _field_plates(program: MonadicProgram) -> dict[str, tuple[Plate, ...]]:
    """For every batch field a plated step uses (an observed site's own value, or an
    input it depends on): the plates of the steps that use it, outermost dim first
    (computed once per declaration)."""
    cached = program.__dict__.get("_field_plates_cache")
    if cached is not None and cached[0] == len(program._steps):
        return cached[1]
    out: dict[str, list[Plate]] = {}
    steps = program._steps
    for s in steps.values():
        if not s.plates:
            continue
        fields = ((s.name,) if isinstance(s, Observed) else ()) + tuple(s.deps)
        for f in fields:
            if f in program.plates or (f in steps and not isinstance(steps[f], Observed)):
                continue
            plates = out.setdefault(f, [])
            plates.extend(p for p in s.plates if p not in plates)
    layout = {f: tuple(sorted(ps, key=lambda p: program.plate_dim(p.name))) for f, ps in out.items()}
    program.__dict__["_field_plates_cache"] = (len(program._steps), layout)
    return layout


def field_dim(program: MonadicProgram, value: torch.Tensor, plate: Plate, plates: tuple[Plate, ...]) -> int | None:
    """The dimension of a batch field that holds ``plate``'s rows, or ``None`` when the
    field does not vary along the plate.

    A field carries the batch dimensions of its sites from their outermost plate to the
    right, then any event or feature dimensions (an input ``x`` of shape ``(N, D)`` in a
    plate at dim -1 has its rows at dim 0; a value of shape ``(N, M)`` in plates at dims
    -2 and -1 has them at dims 0 and 1). A field with fewer dimensions than that is
    right-aligned with the batch dimensions (an ``(M,)`` input varying along the plate at
    dim -1 only).
    """
    depth = max(-program.plate_dim(p.name) for p in plates)
    dim = program.plate_dim(plate.name)
    d = depth + dim if value.dim() >= depth else value.dim() + dim
    return d if d >= 0 else None


def _select_rows(program: MonadicProgram, field: str, v: torch.Tensor, plate: Plate, plates: tuple[Plate, ...],
                 idx: torch.Tensor) -> torch.Tensor:
    d = field_dim(program, v, plate, plates)
    if d is None or v.shape[d] == 1:  # broadcast along the plate
        return v
    if v.shape[d] != plate.size:
        raise BatchError(
            f"batch field {field!r}: plate {plate.name!r} (size {plate.size}) subsamples it along dim {d}, "
            f"which has {v.shape[d]} entries (shape {fmt_shape(v.shape)}); a field holds the batch dims of its "
            "plates from the outermost one, then its event or feature dims"
        )
    return v.index_select(d, idx.to(v.device))


def sliced_mask(program: MonadicProgram, step: Observed, batch: Mapping[str, Any]) -> torch.Tensor:
    """``step.obs_mask`` sliced to the batch's subsample indices along its plates' dims."""
    return slice_to_batch(program, step, getattr(program, f"_obs_mask_{step.name}"), batch)


def slice_to_batch(program: MonadicProgram, step: Any, t: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
    """A per-element tensor of a site (right-aligned with its batch dims, full size along
    its plates) sliced to the batch's subsample indices along the site's plates' dims;
    dims of size 1 (broadcast) are left as they are."""
    for p in step.plates:
        if p.name in batch:
            dim = program.plate_dim(p.name)
            if t.dim() >= -dim and t.shape[dim] == p.size:
                t = t.index_select(dim, batch[p.name].to(t.device))
    return t


def subsample_scale(plates: tuple[Plate, ...], batch: Mapping[str, torch.Tensor]) -> float:
    """Scale of a site local to ``plates``: ``prod(size / len(indices))`` over the plates
    whose subsample indices the batch carries."""
    scale = 1.0
    for p in plates:
        if p.name in batch and p.size is not None:
            scale *= p.size / batch[p.name].shape[0]
    return scale


def subsample_indices(n: int, k: int, device: torch.device | None = None) -> torch.Tensor:
    """``k`` distinct indices drawn uniformly from ``range(n)``, in O(k) time for k << n.

    Draws with replacement and tops up until ``k`` are distinct; by exchangeability every
    k-subset is equally likely. (``torch.randperm(n)[:k]`` costs O(n) per step, which
    would make a subsampled step's cost grow with the data size.) Falls back to
    ``randperm`` when ``k > n / 4``. The indices come back sorted, on ``device``.
    """
    if 4 * k > n:
        idx = torch.randperm(n)[:k].sort().values
        return idx.to(device) if device is not None else idx
    idx = torch.unique(torch.randint(n, (k,)))
    while idx.numel() < k:
        idx = torch.unique(torch.cat([idx, torch.randint(n, (k - idx.numel(),))]))
    return idx.to(device) if device is not None else idx
