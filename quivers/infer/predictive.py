"""``Predictive``: prior and posterior predictive samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import BatchError
from ..guides.guide import Guide, check_guide
from ..program import MonadicProgram
from ..program.enumeration import enumerated_names
from ..shapes import fmt_shape, to_trace_layout
from ..validation import check_positive_int
from .discrete import infer_discrete

__all__ = ["Predictive"]


class Predictive:
    """Draw predictive samples of a model's sites (Pyro's and NumPyro's ``Predictive``).

    Latent sites come from the ``guide`` (posterior predictive), from stored
    ``posterior_samples`` (NumPyro's; sites missing from them are drawn from the prior),
    or, with neither, from the prior. Observed sites are then drawn from the model given
    those latents, and deterministic sites recomputed.

    The batch is used whole: the guide sees all of it (an encoder reads the observed
    data), plates take their extent from it (an observed field's rows, the rows of the
    inputs, or the subsample indices), and one draw is made per row given, so a
    minibatch predicts exactly its rows. Observed values in the batch size the plates but
    are not the values drawn. Subsampled plates are not subsampled again.

    Sites summed out by enumeration (which no guide covers) are drawn from their exact
    posterior given each draw of the other sites (:func:`infer_discrete`) when the batch
    holds every observed site, and from the model otherwise (new data).

    Parameters
    ----------
    model : MonadicProgram
        The model.
    guide : Guide, optional
        Posterior approximation.
    num_samples : int, optional
        Number of draws, vectorised along a leading dimension (default 1000; with
        ``posterior_samples``, their leading size).
    return_sites : sequence of str, optional
        Sites to return. By default every latent, observed and deterministic site with a
        guide or without anything (Pyro's), and every site not in ``posterior_samples``
        with them (NumPyro's).
    posterior_samples : mapping of str to tensor, optional
        Draws of latent sites, ``(num_samples,) + site shape`` (as
        ``guide.sample_posterior`` or an MCMC run gives them; the trace layout works
        too). Entries for deterministic or observed sites are ignored (recomputed).

    Raises
    ------
    BatchError
        On a name in ``return_sites`` or ``posterior_samples`` that is not a site of the
        model, ``posterior_samples`` whose leading sizes differ or disagree with
        ``num_samples``, both ``guide`` and ``posterior_samples``, or a ``num_samples``
        that is not a positive integer.
    GuideError
        If ``guide`` was built for another model instance or samples sites that are not
        latent sites of ``model``.
    """

    def __init__(
        self,
        model: MonadicProgram,
        guide: Guide | None = None,
        num_samples: int | None = None,
        return_sites: Sequence[str] | None = None,
        *,
        posterior_samples: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        if guide is not None and posterior_samples is not None:
            raise BatchError("Predictive: pass a guide or posterior_samples, not both")
        if guide is not None:
            check_guide(model, guide, "Predictive")
        names = {s.name for s in model.steps} | set(model.latent_names)
        if return_sites is not None:
            unknown = [n for n in return_sites if n not in names]
            if unknown:
                raise BatchError(f"return_sites: {unknown} are not sites of {type(model).__name__}")
        self.model = model
        self.guide = guide
        self.posterior_samples = self._check_samples(model, posterior_samples, names)
        if self.posterior_samples:
            sizes = {int(v.shape[0]) for v in self.posterior_samples.values()}
            if len(sizes) != 1:
                raise BatchError(f"posterior_samples: leading sizes differ ({sorted(sizes)}); one draw per row")
            n = sizes.pop()
            if num_samples is not None and int(num_samples) != n:
                raise BatchError(f"num_samples={num_samples} but posterior_samples hold {n} draws")
            num_samples = n
        num_samples = 1000 if num_samples is None else num_samples
        self.num_samples = check_positive_int(num_samples, "Predictive: num_samples", BatchError)
        self.return_sites = list(return_sites) if return_sites is not None else None

    @staticmethod
    def _check_samples(model: MonadicProgram, samples: Mapping[str, torch.Tensor] | None,
                       names: set[str]) -> dict[str, torch.Tensor]:
        if samples is None:
            return {}
        unknown = [k for k in samples if k not in names]
        if unknown:
            raise BatchError(f"posterior_samples: {unknown} are not sites of {type(model).__name__}")
        latent = set(model.latent_names)
        out = {}
        for k, v in samples.items():
            if k not in latent:
                continue
            v = torch.as_tensor(v)
            if v.dim() == 0:
                raise BatchError(f"posterior_samples[{k!r}] is a scalar; expected (num_samples,) + site shape")
            out[k] = v
        return out

    def _latent_draws(self, prepared: Mapping[str, torch.Tensor], ss: torch.Size) -> dict[str, torch.Tensor]:
        if self.guide is not None:
            return self.guide.draws(prepared, ss)
        model, out = self.model, {}
        shapes = {info.name: info for info in model.latent_sites()} if self.posterior_samples else {}
        for k, v in self.posterior_samples.items():
            info = shapes[k]
            event = len(info.event_shape)
            if v.dim() == 1 + model.site_depth(k) + event:
                v = to_trace_layout(v, 1, model.batch_ndim, model.site_depth(k))
            if v.dim() != 1 + model.batch_ndim + event:
                raise BatchError(
                    f"posterior_samples[{k!r}] has shape {fmt_shape(v.shape)}; expected (num_samples,) + the site's "
                    f"shape {fmt_shape(model.to_site_layout(k, torch.zeros(info.shape), 0).shape)}"
                )
            out[k] = v.to(device=model.device_of(prepared))
        return out

    @torch.no_grad()
    def __call__(self, batch: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
        """Draw the samples.

        Returns
        -------
        dict
            ``{site: tensor}`` of shape ``(num_samples,) + site shape`` (each site's own
            layout: the dims of its plates, sized by the batch, then its event shape).

        Raises
        ------
        QuiversError
            On a bad batch (as :meth:`MonadicProgram.prepare` and ``trace``), or a guide
            whose draws do not fit the batch's rows.
        """
        model = self.model
        prepared = model.prepare(batch, subsample=False)
        ss = torch.Size((self.num_samples,))
        z = self._latent_draws(prepared, ss)
        sample_latent = self.guide is None
        enumerated = [n for n in enumerated_names(model) if n not in z]
        if enumerated and (self.guide is not None or self.posterior_samples):
            sample_latent = all(n in z or n in enumerated for n in model.latent_names)
            if all(n in prepared for n in model.observed_names):  # the data: its discrete posterior
                drawn = infer_discrete(model, batch=prepared, temperature=1, num_samples=self.num_samples, values=z)
                for n in enumerated:
                    z[n] = to_trace_layout(drawn[n], 1, model.batch_ndim, model.site_depth(n))
        tr = model.trace(prepared, z, ss, sample_latent=sample_latent, predictive=True)
        if self.return_sites is not None:
            wanted = self.return_sites
        else:
            given = set(self.posterior_samples)
            wanted = [n for n, s in tr.items()
                      if s.kind in ("latent", "observed", "deterministic") and n not in given]
            wanted += [n for n in z if n not in tr]  # masked entries (<name>_unobserved)
        out = {}
        for n in wanted:
            v = tr[n].value if n in tr and tr[n].kind != "param" else z[n]
            v = model.expand_constant(n, v, ss)
            out[n] = model.to_site_layout(n, v, 1)
        return out
