"""Plates: conditionally independent dimensions of a program."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ModelSpecError
from .names import check_identifier, check_size

__all__ = ["Plate"]


@dataclass(eq=False)
class Plate:
    """A set of conditionally independent dimensions (Pyro's ``plate``).

    Every plate of a program owns one batch dimension, counted from the right
    (``dim=-1`` is the rightmost batch dimension). Sites declared inside a plate have
    the plate's size along that dimension; sites outside it have size 1 there.

    When a batch holds only part of the plate (a minibatch, or a random subsample drawn
    because ``subsample_size`` is set), the log-densities of sites inside the plate are
    scaled by ``size / batch_length`` so the objective stays an unbiased estimate of the
    full-data one.

    Parameters
    ----------
    name : str
        The plate's name. A batch entry under this name holds the subsample indices
        (a ``LongTensor`` of shape ``(batch_length,)``) of the rows the batch carries.
    size : int or None
        The full (global) size of the plate: the number of data rows, groups, ...
        ``None`` means "whatever the batch holds" (no scaling); a plate holding
        latent sites needs a size.
    subsample_size : int or None
        When set, each evaluation draws ``subsample_size`` indices uniformly without
        replacement and subsamples every plated batch field and local latent.
    dim : int or None
        The (negative) batch dimension this plate owns. ``None`` assigns ``-1, -2, ...``
        in declaration order, skipping dimensions claimed explicitly.

    Raises
    ------
    ModelSpecError
        If ``size``, ``subsample_size`` or ``dim`` is not valid.
    """

    name: str
    size: int | None = None
    subsample_size: int | None = None
    dim: int | None = None

    def __post_init__(self) -> None:
        check_identifier(self.name, "plate")
        if self.size is not None:
            self.size = check_size(self.size, f"plate {self.name!r}: size")
        if self.subsample_size is not None:
            self.subsample_size = check_size(self.subsample_size, f"plate {self.name!r}: subsample_size")
            if self.size is None:
                raise ModelSpecError(
                    f"plate {self.name!r}: subsample_size={self.subsample_size} needs the full "
                    "size; pass size=<number of rows>"
                )
            if self.subsample_size > self.size:
                raise ModelSpecError(
                    f"plate {self.name!r}: subsample_size={self.subsample_size} is larger "
                    f"than size={self.size}"
                )
        if self.dim is not None and (int(self.dim) != self.dim or self.dim >= 0):
            raise ModelSpecError(
                f"plate {self.name!r}: dim must be a negative int counted from the right, "
                f"got {self.dim!r}"
            )

    def __repr__(self) -> str:
        return (
            f"Plate({self.name!r}, size={self.size}, subsample_size={self.subsample_size}, "
            f"dim={self.dim})"
        )
