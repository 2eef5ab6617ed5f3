"""``Predictive``: prior and posterior predictive samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import BatchError
from ..guides.guide import Guide, check_guide
from ..program import MonadicProgram

__all__ = ["Predictive"]


class Predictive:
    """Draw predictive samples of a model's sites (Pyro's ``Predictive``).

    With a ``guide``, latent sites are drawn from the guide (posterior predictive);
    without one, from the prior. Observed sites are then drawn from the model given
    those latents, and deterministic sites recomputed. Observed values in the batch are
    ignored; program inputs (``x``) are used. Subsampled plates are evaluated on the
    full batch.

    Parameters
    ----------
    model : MonadicProgram
        The model.
    guide : Guide, optional
        Posterior approximation; prior predictive when omitted.
    num_samples : int
        Number of draws (vectorised along a leading dimension).
    return_sites : sequence of str, optional
        Sites to return; by default every observed and deterministic site (and the
        latent sites too when no guide is given).

    Raises
    ------
    BatchError
        On a name in ``return_sites`` that is not a site of the model.
    GuideError
        If ``guide`` was built for another model instance or samples sites that are not
        latent sites of ``model``.
    """

    def __init__(
        self,
        model: MonadicProgram,
        guide: Guide | None = None,
        num_samples: int = 1000,
        return_sites: Sequence[str] | None = None,
    ) -> None:
        if guide is not None:
            check_guide(model, guide, "Predictive")
        self.model = model
        self.guide = guide
        self.num_samples = int(num_samples)
        names = {s.name for s in model.steps} | set(model.latent_names)
        if return_sites is not None:
            unknown = [n for n in return_sites if n not in names]
            if unknown:
                raise BatchError(f"return_sites: {unknown} are not sites of {type(model).__name__}")
        self.return_sites = list(return_sites) if return_sites is not None else None

    @torch.no_grad()
    def __call__(self, batch: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
        """Draw the samples.

        Returns
        -------
        dict
            ``{site: tensor}`` of shape ``(num_samples,) + batch_shape + event_shape``.
        """
        observed = set(self.model.observed_names)
        inputs = {k: v for k, v in (batch or {}).items() if k not in observed}
        prepared = self.model.prepare(inputs, subsample=False)
        ss = torch.Size((self.num_samples,))
        z = self.guide.sample_posterior(prepared, ss) if self.guide is not None else {}
        tr = self.model.trace(prepared, z, ss, sample_latent=self.guide is None, sample_observed=True)
        if self.return_sites is not None:
            wanted = self.return_sites
        else:
            kinds = ("observed", "deterministic") if self.guide is not None else ("observed", "deterministic", "latent")
            wanted = [n for n, s in tr.items() if s.kind in kinds]
        out = {}
        for n in wanted:
            v = tr[n].value if n in tr else z[n]
            if tr[n].kind == "deterministic" and not _depends_on_draws(self.model, n):
                v = v.expand(ss + v.shape)  # a value without sample dims: the same in every draw
            out[n] = v
        return out


def _depends_on_draws(model: MonadicProgram, name: str) -> bool:
    """Whether site ``name`` depends, directly or not, on a latent or observed site."""
    steps = {s.name: s for s in model.steps}
    todo, seen = [name], set()
    while todo:
        for d in steps[todo.pop()].deps:
            if d in steps and d not in seen:
                if steps[d].kind in ("latent", "observed"):
                    return True
                seen.add(d)
                todo.append(d)
    return False
