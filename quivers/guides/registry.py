"""The latent-site registry every guide shares.

For each latent site of a program: its shape, support, ``biject_to`` transform, the shape
and size of its unconstrained value, its slice of one flat unconstrained vector, and the
plate dimensions along which subsample indices select a slice. Shape and constraint logic
lives here, once, so guides only parameterise distributions over unconstrained values.

Supports that move with other sites (``Uniform(0, a)``, Stan's parameter-dependent
``<lower=..., upper=...>``) are *dynamic*: :meth:`LatentRegistry.constrain` evaluates such a
site's distribution at the current upstream values, in model order, and maps through
that support's ``biject_to`` with its ``log|det J|`` (NumPyro's ``constrain_fn`` does the
same); static supports use the transform built once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace

import torch
from torch.distributions import Transform, biject_to

from ..errors import GuideError
from ..program import Evaluator, LatentSiteInfo, MissingValue, MonadicProgram
from ..program.enumeration import enumerated_names
from ..program.steps import Latent, Observed, Param
from ..shapes import fmt_shape, reduce_to_sample, to_trace_layout
from .site import LatentSite, has_tensor_parameters, tensor_like

__all__ = ["LatentSite", "LatentRegistry"]


class LatentRegistry:
    """Latent sites of a program, in declaration order, with their flat packing.

    Parameters
    ----------
    model : MonadicProgram
        The program; its latent sites are found with ``model.latent_sites()``.
    exclude : sequence of str, optional
        Latent sites left out (supplied in the batch instead, or by another guide).
        Sites marked for enumeration (``enumerate="parallel"``) are always left out: the
        objective sums them out of the model.

    Raises
    ------
    GuideError
        If the model has no latent sites left, a latent site is discrete and not
        enumerated, or a support has no ``biject_to`` transform.
    """

    def __init__(self, model: MonadicProgram, exclude: tuple[str, ...] | list[str] | None = None) -> None:
        exclude = tuple(exclude or ())
        known = set(model.latent_names) | set(model.observed_names)
        unknown = [n for n in exclude if n not in known]
        if unknown:
            raise GuideError(f"observed_names: {unknown} are not sites of {type(model).__name__}")
        self.model = model
        exclude = exclude + tuple(n for n in enumerated_names(model) if n not in exclude)
        self._all: OrderedDict[str, LatentSite] = OrderedDict()
        self._sites: OrderedDict[str, LatentSite] = OrderedDict()
        offset = 0
        for info in model.latent_sites():
            included = info.name not in exclude
            site = self._make_site(model, info, offset, strict=included)
            self._all[info.name] = site
            if included:
                self._sites[info.name] = site
                offset += site.numel
        if not self._sites:
            raise GuideError(
                f"{type(model).__name__} has no latent sites to guide (observed_names={list(exclude)}); "
                "a guide needs at least one Latent step"
            )
        self.size = offset
        self.has_dynamic = any(s.dynamic for s in self._sites.values())

    @staticmethod
    def _make_site(model: MonadicProgram, info: LatentSiteInfo, offset: int, strict: bool) -> LatentSite:
        upstream = [a for a in model.ancestors(info.name) if isinstance(model._steps[a], (Latent, Param, Observed))]
        dynamic = bool(upstream) and has_tensor_parameters(info.support)
        t, ushape = None, info.shape
        if info.is_discrete:
            if strict:
                raise GuideError(
                    f"latent site {info.name!r} has discrete support {info.support}; automatic guides cover "
                    "continuous sites: enumerate it (Latent(..., enumerate='parallel') or config_enumerate(model), "
                    "fitted with TraceEnum_ELBO), guide it with AutoDiscreteParallel, or marginalise it by hand"
                )
        else:
            try:
                t = biject_to(info.support)
            except NotImplementedError as e:
                if strict:
                    raise GuideError(
                        f"latent site {info.name!r}: support {info.support} has no biject_to transform; "
                        "reparameterise the site (model.reparam with ProjectedNormalReparam for a ProjectedNormal on "
                        "the sphere; a Cholesky factor instead of a covariance)"
                    ) from e
            else:
                ushape = torch.Size(t.inverse_shape(info.shape))
        uevent = len(ushape) - len(info.batch_shape)
        dims = {p.name: model.plate_dim(p.name) - uevent for p in info.plates}
        return LatentSite(info.name, info.batch_shape, info.event_shape, info.support, t, ushape,
                          info.plates, dims, offset, info.prior, dynamic)

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
                f"local latent variables {local}; use AutoNormalGuide (or AutoGuideList) for them"
            )

    # ---------------------------------------------------------------- transforms
    def constrain(
        self, u: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], sample_shape: torch.Size,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Map unconstrained values to the supports, site by site in model order.

        Parameters
        ----------
        u : mapping of str to tensor
            Unconstrained values, shape ``sample_shape + unconstrained_shape`` (subsampled).
        batch : mapping
            The prepared batch (plate indices; values of latent sites this guide does not
            cover, for dynamic supports).
        sample_shape : torch.Size
            Leading particle shape.

        Returns
        -------
        values : dict
            Constrained values, shape ``sample_shape + batch_shape + event_shape``.
        log_det : dict
            ``log|det J|`` of each site's transform at its value, summed to ``sample_shape``;
            sites whose transform is the identity (real support) have no entry.

        Raises
        ------
        GuideError
            If a dynamic support needs a site that is neither covered here nor in the batch.
        """
        values: dict[str, torch.Tensor] = {}
        log_det: dict[str, torch.Tensor] = {}
        ev = None
        for site in self._sites.values():
            us = u[site.name]
            if site.dynamic:
                ev = ev or Evaluator(self.model, batch, values)
                t = self._transform_at(site, ev)
            else:
                t = site.transform
            if site.is_real and not site.dynamic:  # the identity: no Jacobian term
                x = us
            else:
                x = t(us)
                log_det[site.name] = reduce_to_sample(t.log_abs_det_jacobian(us, x), sample_shape)
            values[site.name] = x
            if ev is not None:
                ev.set(site.name, x)
        return values, log_det

    def unconstrain(
        self, x: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor],
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Map constrained values (trace layout, any leading sample shape) back to
        unconstrained space.

        Returns
        -------
        u : dict
            Unconstrained values, shape ``sample_shape + unconstrained_shape``.
        log_det : dict
            ``log|det J|`` of each site's forward transform at ``u``, summed to the
            site's ``sample_shape``; sites whose transform is the identity have no entry.

        Raises
        ------
        GuideError
            As :meth:`constrain`.
        """
        u: dict[str, torch.Tensor] = {}
        log_det: dict[str, torch.Tensor] = {}
        ev = Evaluator(self.model, batch, x) if self.has_dynamic else None
        for site in self._sites.values():
            xs = self._trace_layout(site, x[site.name])
            if site.is_real and not site.dynamic:  # the identity: no Jacobian term
                u[site.name] = xs
                continue
            t = self._transform_at(site, ev) if site.dynamic else site.transform
            us = t.inv(xs)
            u[site.name] = us
            ss = xs.shape[: xs.dim() - len(site.shape)]
            log_det[site.name] = reduce_to_sample(t.log_abs_det_jacobian(us, xs), ss)
        return u, log_det

    def _trace_layout(self, site: LatentSite, x: torch.Tensor) -> torch.Tensor:
        """A value in the site's own layout (as :meth:`~quivers.guides.Guide.sample_posterior`
        and ``Predictive`` return it) put in trace layout; a trace-layout value unchanged.
        The two differ by the size-1 dims of the plates the site is not in, which a
        trace-layout value has right after its sample shape."""
        depth = self.model.site_depth(site.name)
        pad = self.model.batch_ndim - depth
        k = len(site.shape)
        padded = x.dim() >= k and all(s == 1 for s in x.shape[x.dim() - k: x.dim() - k + pad])
        if pad <= 0 or padded or x.dim() < k - pad:
            return x
        return to_trace_layout(x, x.dim() - (k - pad), self.model.batch_ndim, depth)

    def _transform_at(self, site: LatentSite, ev: Evaluator) -> Transform:
        """``biject_to`` of a dynamic site's support at the evaluator's upstream values."""
        try:
            d = ev.distribution(site.name)
        except MissingValue as e:
            raise GuideError(
                f"latent site {site.name!r} has a support that depends on {e.name!r}, which this guide does not "
                f"cover and the batch does not hold; guide both with one guide, or pass {e.name!r}'s value in "
                "the batch (AutoGuideList passes earlier parts' values to later parts: append parts in model order)"
            ) from None
        return biject_to(d.support)

    # ---------------------------------------------------------------- initial values
    def initial_unconstrained(self, init_fn: Callable[[LatentSite], torch.Tensor]) -> dict[str, torch.Tensor]:
        """Unconstrained initial value of each site of this registry (shape
        ``unconstrained_shape``, detached), from :meth:`initial_values`."""
        values = self.initial_values(init_fn)
        with torch.no_grad():
            u, _ = self.unconstrain(values, {})  # every site's value: dynamic supports read other sites
        return {s.name: u[s.name].reshape(s.unconstrained_shape).detach().clone() for s in self}

    def initial_values(self, init_fn: Callable[[LatentSite], torch.Tensor]) -> dict[str, torch.Tensor]:
        """Constrained initial values of every latent site of the model, in model order.

        Each site's prior (and, for a dynamic site, its support and transform) is
        evaluated at the initial values of the sites it depends on, as NumPyro's and
        Pyro's init strategies see it, so every initial value lies in its support.

        Parameters
        ----------
        init_fn : callable
            ``init_fn(site) -> value`` (see :mod:`quivers.guides.initialization`).

        Returns
        -------
        dict
            ``{name: value}`` (trace layout, full size) for every latent site, including
            those this registry leaves out (other parts' initial values for this guide's
            dynamic supports).

        Raises
        ------
        GuideError
            If a value has the wrong shape or lies outside its support.
        """
        ev = Evaluator(self.model, {})
        out: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for site in self._all.values():
                view = site
                if self.model.ancestors(site.name):  # the prior at the upstream initial values
                    prior = ev.distribution(site.name).expand(site.batch_shape)
                    t = biject_to(prior.support) if site.dynamic else site.transform
                    view = replace(site, prior=prior, support=prior.support, transform=t)
                if site.transform is None:  # a discrete site another guide covers
                    value = view.prior.sample()
                else:
                    value = self.check_value(view, init_fn(view), "initial value")
                out[site.name] = value
                ev.set(site.name, value)
        return out

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
            On a shape that does not broadcast, a non-finite value, a value outside the
            support, or one on its boundary (no finite unconstrained point maps to it).
        """
        like = tensor_like(site.prior) or {"dtype": torch.get_default_dtype()}  # a float64 model: float64 values
        value = torch.as_tensor(value).to(**like)
        try:
            value = value.expand(site.shape)
        except RuntimeError as e:
            raise GuideError(
                f"{what} for site {site.name!r} has shape {fmt_shape(value.shape)}, expected "
                f"{fmt_shape(site.shape)} (or a shape that broadcasts to it)"
            ) from e
        if not bool(torch.isfinite(value).all()):
            raise GuideError(
                f"{what} for site {site.name!r} holds {int((~torch.isfinite(value)).sum())} non-finite value(s) "
                f"(NaN or inf); expected finite values in its support {site.support}"
            )
        if not bool(site.support.check(value).all()):
            raise GuideError(f"{what} for site {site.name!r} lies outside its support {site.support}")
        if site.transform is not None and not bool(torch.isfinite(site.transform.inv(value)).all()):
            raise GuideError(
                f"{what} for site {site.name!r} lies on the boundary of its support {site.support}, where the "
                "unconstrained value is infinite; move it inside"
            )
        return value
