"""The latent-site registry every guide shares.

For each latent site of a program: its shape, support, ``biject_to`` transform, the shape
and size of its unconstrained value, its slice of one flat unconstrained vector, and the
plate dimensions along which subsample indices select a slice. Shape and constraint logic
lives here, once, so guides only parameterise distributions.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch.distributions import Distribution, Transform, biject_to, constraints

from ..errors import GuideError
from ..program import LatentSiteInfo, MonadicProgram, Plate
from ..program.program import subsample_scale
from ..shapes import fmt_shape, reduce_to_sample

__all__ = ["LatentSite", "LatentRegistry"]


@dataclass
class LatentSite:
    """One latent site as guides see it.

    Attributes
    ----------
    name : str
        Site name.
    batch_shape, event_shape : torch.Size
        Full (not subsampled) constrained shapes.
    support : Constraint
        The prior's support.
    transform : Transform
        ``biject_to(support)``: unconstrained -> constrained.
    unconstrained_shape : torch.Size
        ``transform.inverse_shape(batch_shape + event_shape)``.
    plates : tuple of Plate
        Plates the site sits in.
    plate_dims : dict of str to int
        For each plate, the (negative) dimension of the *unconstrained* value it owns.
    offset : int
        Start of the site's slice in the flat unconstrained vector.
    prior : Distribution
        The prior at guide construction (for init strategies); not saved.
    """

    name: str
    batch_shape: torch.Size
    event_shape: torch.Size
    support: object
    transform: Transform
    unconstrained_shape: torch.Size
    plates: tuple[Plate, ...]
    plate_dims: dict[str, int]
    offset: int
    prior: Distribution

    @property
    def shape(self) -> torch.Size:
        """Constrained shape ``batch_shape + event_shape``."""
        return self.batch_shape + self.event_shape

    @property
    def numel(self) -> int:
        """Number of unconstrained coordinates."""
        return self.unconstrained_shape.numel()

    @property
    def unconstrained_event_ndim(self) -> int:
        """Event rank of the unconstrained value."""
        return len(self.unconstrained_shape) - len(self.batch_shape)

    @property
    def is_real(self) -> bool:
        """Whether the support is the real line (or ``independent(real, n)``): the
        unconstrained and constrained values coincide."""
        c = self.support
        while isinstance(c, constraints.independent):
            c = c.base_constraint
        return c is constraints.real

    @property
    def is_local(self) -> bool:
        """Whether the site sits in a plate that can be subsampled."""
        return any(p.subsample_size is not None for p in self.plates)


class LatentRegistry:
    """Latent sites of a program, in declaration order, with their flat packing.

    Parameters
    ----------
    model : MonadicProgram
        The program; its latent sites are found with ``model.latent_sites()``.
    exclude : sequence of str, optional
        Latent sites left out (supplied in the batch instead, or by another guide).

    Raises
    ------
    GuideError
        If the model has no latent sites, a latent site is discrete (no enumeration), or
        a support has no ``biject_to`` transform.
    """

    def __init__(self, model: MonadicProgram, exclude: tuple[str, ...] | list[str] | None = None) -> None:
        exclude = tuple(exclude or ())
        known = set(model.latent_names) | set(model.observed_names)
        unknown = [n for n in exclude if n not in known]
        if unknown:
            raise GuideError(f"observed_names: {unknown} are not sites of {type(model).__name__}")
        self._sites: OrderedDict[str, LatentSite] = OrderedDict()
        offset = 0
        nb = model.batch_ndim
        for info in model.latent_sites():
            if info.name in exclude:
                continue
            site = self._make_site(model, info, nb, offset)
            self._sites[info.name] = site
            offset += site.numel
        if not self._sites:
            raise GuideError(
                f"{type(model).__name__} has no latent sites to guide (observed_names={list(exclude)}); "
                "a guide needs at least one Latent step"
            )
        self.size = offset

    @staticmethod
    def _make_site(model: MonadicProgram, info: LatentSiteInfo, nb: int, offset: int) -> LatentSite:
        if info.is_discrete:
            raise GuideError(
                f"latent site {info.name!r} has discrete support {info.support}; automatic guides "
                "cover continuous sites (write a Guide subclass that samples it, or marginalise it "
                "out of the model)"
            )
        try:
            t = biject_to(info.support)
        except NotImplementedError as e:
            raise GuideError(
                f"latent site {info.name!r}: support {info.support} has no biject_to transform; "
                "reparameterise the site (for example a Cholesky factor instead of a covariance)"
            ) from e
        ushape = torch.Size(t.inverse_shape(info.shape))
        uevent = len(ushape) - len(info.batch_shape)
        dims = {p.name: model.plate_dim(p.name) - uevent for p in info.plates}
        return LatentSite(
            info.name, info.batch_shape, info.event_shape, info.support, t, ushape,
            info.plates, dims, offset, info.prior,
        )

    # ---------------------------------------------------------------- mapping API
    def __getitem__(self, name: str) -> LatentSite:
        return self._sites[name]

    def __iter__(self) -> Iterator[LatentSite]:
        return iter(self._sites.values())

    def __len__(self) -> int:
        return len(self._sites)

    def __contains__(self, name: object) -> bool:
        return name in self._sites

    @property
    def names(self) -> list[str]:
        """Site names in declaration order."""
        return list(self._sites)

    @property
    def has_local(self) -> bool:
        """Whether any site sits in a subsampled plate."""
        return any(s.is_local for s in self)

    # ---------------------------------------------------------------- subsampling
    def select(self, site: LatentSite, x: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Slice a full-size per-site tensor (shape ``... + unconstrained_shape``) to the
        batch's subsample indices along the site's plate dimensions."""
        for p in site.plates:
            if p.name in batch:
                idx = batch[p.name]
                x = x.index_select(site.plate_dims[p.name], idx.to(x.device))
        return x

    @staticmethod
    def scale(site: LatentSite, batch: Mapping[str, torch.Tensor]) -> float:
        """``prod(size / len(indices))`` over the site's plates that the batch subsamples."""
        return subsample_scale(site.plates, batch)

    def require_global(self, guide_name: str) -> None:
        """Raise for guides that flatten every latent into one vector when a site is local.

        Raises
        ------
        GuideError
            If any site sits in a subsampled plate.
        """
        local = [s.name for s in self if s.is_local]
        if local:
            raise GuideError(
                f"{guide_name} flattens all latents into one vector and cannot follow subsampled "
                f"local latent sites {local}; use AutoNormalGuide (or AutoGuideList) for them"
            )

    # ---------------------------------------------------------------- transforms
    def constrain(
        self, site: LatentSite, u: torch.Tensor, sample_shape: torch.Size,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Map an unconstrained value to the support.

        Returns
        -------
        x : torch.Tensor
            Constrained value, shape ``sample_shape + batch_shape + event_shape``.
        log_det : torch.Tensor
            ``log|det J|`` of the transform at ``u``, summed to shape ``sample_shape``.
        """
        x = site.transform(u)
        return x, reduce_to_sample(site.transform.log_abs_det_jacobian(u, x), sample_shape)

    def unconstrain(self, site: LatentSite, x: torch.Tensor) -> torch.Tensor:
        """Map a constrained value to unconstrained space (``transform.inv``)."""
        return site.transform.inv(x)

    # ---------------------------------------------------------------- flat packing
    def block_shape(self, batch_ndim: int = 0) -> torch.Size:
        """The leading ``batch_ndim`` dimensions every site's unconstrained value shares.

        Guides with block-diagonal structure (``AutoBatchedMultivariateNormal``) pack each
        block separately: the flat vector has shape ``block_shape + (size / numel(block_shape),)``.

        Raises
        ------
        GuideError
            If ``batch_ndim`` is negative, exceeds a site's batch rank, or the sites'
            leading dimensions differ.
        """
        if int(batch_ndim) != batch_ndim or batch_ndim < 0:
            raise GuideError(f"batch_ndim must be a non-negative int, got {batch_ndim!r}")
        if batch_ndim == 0:
            return torch.Size()
        shapes = {}
        for s in self:
            if len(s.batch_shape) < batch_ndim:
                raise GuideError(
                    f"batch_ndim={batch_ndim}: site {s.name!r} has only {len(s.batch_shape)} batch "
                    f"dimension(s) (shape {fmt_shape(s.shape)})"
                )
            shapes[s.name] = s.unconstrained_shape[:batch_ndim]
        if len(set(shapes.values())) > 1:
            found = ", ".join(f"{k}: {fmt_shape(v)}" for k, v in shapes.items())
            raise GuideError(
                f"batch_ndim={batch_ndim}: every latent site must share its leading {batch_ndim} batch "
                f"dimension(s), found {found}; guide the sites that differ with another guide "
                "(AutoGuideList)"
            )
        return next(iter(shapes.values()))

    def pack(
        self, values: Mapping[str, torch.Tensor], sample_shape: torch.Size = torch.Size(), batch_ndim: int = 0,
    ) -> torch.Tensor:
        """Concatenate unconstrained per-site values into one vector (per block).

        Parameters
        ----------
        values : mapping of str to tensor
            Unconstrained values, shape ``sample_shape + unconstrained_shape`` per site.
        sample_shape : torch.Size
            Leading particle shape.
        batch_ndim : int
            Leading site dimensions kept as blocks (see :meth:`block_shape`).

        Returns
        -------
        torch.Tensor
            Shape ``sample_shape + block_shape + (size / numel(block_shape),)``.
        """
        blocks = self.block_shape(batch_ndim) if batch_ndim else torch.Size()
        parts = [values[s.name].reshape(sample_shape + blocks + (-1,)) for s in self]
        return torch.cat(parts, dim=-1)

    def unpack(self, flat: torch.Tensor, batch_ndim: int = 0) -> dict[str, torch.Tensor]:
        """Split a flat unconstrained vector, shape ``sample_shape + block_shape + (dim,)``,
        into per-site values of shape ``sample_shape + unconstrained_shape``.

        Raises
        ------
        GuideError
            If the trailing dimensions do not match the packing.
        """
        blocks = self.block_shape(batch_ndim) if batch_ndim else torch.Size()
        dim = self.size // max(blocks.numel(), 1)
        if flat.shape[-1] != dim or tuple(flat.shape[flat.dim() - 1 - len(blocks): -1]) != tuple(blocks):
            raise GuideError(
                f"flat latent vector has shape {fmt_shape(flat.shape)}, expected sample_shape + "
                f"{fmt_shape(blocks + (dim,))}"
            )
        ss = flat.shape[: flat.dim() - 1 - len(blocks)]
        out, start = {}, 0
        for s in self:
            n = s.numel // max(blocks.numel(), 1)
            out[s.name] = flat[..., start: start + n].reshape(ss + s.unconstrained_shape)
            start += n
        return out

    @staticmethod
    def check_value(site: LatentSite, value: torch.Tensor, what: str) -> torch.Tensor:
        """Broadcast a user-given constrained value to the site's shape and check its support.

        Raises
        ------
        GuideError
            On a shape that does not broadcast or a value outside the support.
        """
        value = torch.as_tensor(value, dtype=torch.get_default_dtype())
        try:
            value = value.expand(site.shape)
        except RuntimeError as e:
            raise GuideError(
                f"{what} for site {site.name!r} has shape {fmt_shape(value.shape)}, expected "
                f"{fmt_shape(site.shape)} (or a shape that broadcasts to it)"
            ) from e
        if not bool(site.support.check(value).all()):
            raise GuideError(f"{what} for site {site.name!r} lies outside its support {site.support}")
        return value
