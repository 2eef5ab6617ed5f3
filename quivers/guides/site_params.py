"""``SiteParameters``: one parameter tensor per latent site, the global sites' held as one
flat vector.

A mean-field guide has a location (and a scale) per site. Held as one ``nn.Parameter``
per site, every step pays per site: a random draw, a softplus, a log-density, their
autograd nodes, and one optimizer update per tensor. Held as one flat vector over the
global sites (those outside subsampled plates), each of these happens once; sites in
subsampled plates keep their own tensor, whose rows the batch's indices select.

The storage is internal: ``state_dict()`` holds one entry per site under the site's
name, as a ``ParameterDict`` would, so checkpoints name sites, not offsets, and
checkpoints written before the flat storage load unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .site import LatentSite

__all__ = ["SiteParameters"]


class SiteParameters(nn.Module):
    """A read/write mapping ``site name -> tensor`` (unconstrained, full-size shape), with
    the global sites' tensors stored as slices of one flat parameter.

    ``params[name]`` is the site's tensor: a view of :attr:`flat` for a global site
    (writes under ``torch.no_grad()`` go through), the site's own parameter otherwise.
    :attr:`flat` is ``None`` when no site is global, or when the global sites differ in
    dtype or device (then every site keeps its own parameter).

    Parameters
    ----------
    sites : sequence of LatentSite
        The sites, in the order the flat vector follows.
    values : mapping of str to Tensor
        Initial value of each site, shape ``site.unconstrained_shape``.

    Attributes
    ----------
    flat : nn.Parameter or None
        The global sites' values, concatenated (flattened) in ``sites`` order; shape
        ``(sum of their numel,)``.
    local : nn.ParameterDict
        The other sites' parameters.
    flat_names : tuple of str
        The sites held in :attr:`flat`, in order.
    """

    def __init__(self, sites: Sequence[LatentSite], values: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        glob = [s for s in sites if not s.is_local]
        if len({(values[s.name].dtype, values[s.name].device) for s in glob}) > 1:
            glob = []  # one flat vector needs one dtype and device
        self.flat_names: tuple[str, ...] = tuple(s.name for s in glob)
        self._slices: dict[str, tuple[int, int, torch.Size]] = {}
        start = 0
        for s in glob:
            self._slices[s.name] = (start, start + s.numel, s.unconstrained_shape)
            start += s.numel
        self._sizes = [s.numel for s in glob]
        self._plates = frozenset(p.name for s in glob for p in s.plates)
        self._order = tuple(s.name for s in sites)
        self.flat = nn.Parameter(torch.cat([values[s.name].reshape(-1) for s in glob])) if glob else None
        self.local = nn.ParameterDict({s.name: nn.Parameter(values[s.name]) for s in sites
                                       if s.name not in self._slices})
        self.register_state_dict_post_hook(_per_site_state_dict)
        self.register_load_state_dict_pre_hook(_flat_from_per_site)

    # ------------------------------------------------------------------ mapping
    def __getitem__(self, name: str) -> torch.Tensor:
        sl = self._slices.get(name)
        if sl is None:
            return self.local[name]
        a, b, shape = sl
        return self.flat[a:b].view(shape)

    def __contains__(self, name: object) -> bool:
        return name in self._order

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def keys(self) -> tuple[str, ...]:
        return self._order

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        return ((n, self[n]) for n in self._order)

    def values(self) -> Iterator[torch.Tensor]:
        return (self[n] for n in self._order)

    # ------------------------------------------------------------------ the flat path
    def flat_applies(self, batch: Mapping[str, Any]) -> bool:
        """Whether the flat vector can be used whole for this batch: there is one, and the
        batch selects no rows of its sites (indices for one of their plates would)."""
        return self.flat is not None and self._plates.isdisjoint(batch.keys())

    def split(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-site views of a flat tensor ``sample_shape + (flat size,)``: each site's
        part reshaped to ``sample_shape + site.unconstrained_shape``."""
        ss = x.shape[:-1]
        parts = x.split(self._sizes, -1)
        return {n: p.reshape(ss + self._slices[n][2]) for n, p in zip(self.flat_names, parts, strict=True)}

    def pack(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The inverse of :meth:`split`: the global sites' tensors, each of shape
        ``sample_shape + site.unconstrained_shape``, concatenated to ``sample_shape +
        (flat size,)``; sample shapes that differ are broadcast."""
        parts = []
        for n in self.flat_names:
            v = x[n]
            shape = self._slices[n][2]
            parts.append(v.reshape(v.shape[: v.dim() - len(shape)] + (-1,)))
        ss = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
        return torch.cat([p if p.shape[:-1] == ss else p.expand(ss + p.shape[-1:]) for p in parts], -1)


# ---------------------------------------------------------------------- state-dict hooks
def _per_site_state_dict(module: SiteParameters, state_dict: dict[str, Any], prefix: str,
                         local_metadata: Any) -> None:
    """Rewrite ``flat`` and ``local.<name>`` as one entry per site, ``<name>``, in site order."""
    flat = state_dict.pop(prefix + "flat", None)
    own = {n: state_dict.pop(prefix + "local." + n) for n in module.local}
    for n in module._order:
        if n in own:
            state_dict[prefix + n] = own[n]
        else:
            a, b, shape = module._slices[n]
            state_dict[prefix + n] = flat[a:b].view(shape)


def _flat_from_per_site(module: SiteParameters, state_dict: dict[str, Any], prefix: str, local_metadata: Any,
                        strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                        error_msgs: list[str]) -> None:
    """Read one entry per site back into ``flat`` and ``local.<name>``.

    A missing site is reported missing by its own name (and keeps its current value when
    ``strict=False``); a site whose saved shape differs is reported as ``load_state_dict``
    reports a size mismatch (which then raises), keeping its current value.
    """
    resolved: dict[str, torch.Tensor] = {}
    for n in module._order:
        current = module[n].detach()
        v = state_dict.pop(prefix + n, None)
        if v is None:
            missing_keys.append(prefix + n)
            v = current
        elif not isinstance(v, torch.Tensor) or v.shape != current.shape:
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            error_msgs.append(f"size mismatch for {prefix}{n}: copying a param with shape {shape} from "
                              f"checkpoint, the shape in current model is {tuple(current.shape)}.")
            v = current
        resolved[n] = v
    for n in module.local:
        state_dict[prefix + "local." + n] = resolved[n]
    if module.flat is not None:
        state_dict[prefix + "flat"] = torch.cat([resolved[n].reshape(-1).to(module.flat) for n in module.flat_names])
