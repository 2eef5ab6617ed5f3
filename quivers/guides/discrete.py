"""``AutoDiscreteParallel``: learned categorical probabilities for discrete sites,
enumerated in parallel by ``TraceEnum_ELBO`` (Pyro's ``AutoDiscreteParallel``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical

from ..errors import GuideError
from ..program import MonadicProgram
from ..program.markov import Markov
from ..shapes import reduce_to_sample
from .guide import Batch, Guide, LogProbTerms, Sites

__all__ = ["AutoDiscreteParallel"]


class AutoDiscreteParallel(Guide):
    """Independent categorical distributions over every discrete latent site:
    ``q(z_i = k) = softmax(logits_i)_k`` per site and plate element.

    With :class:`~quivers.infer.TraceEnum_ELBO` the sites are not sampled: the objective
    takes the exact expectation over their ``K`` values (guide-side parallel
    enumeration), so the gradient of the probabilities has no Monte Carlo noise.
    Combine it with a continuous guide in an :class:`~quivers.guides.AutoGuideList`
    (the continuous part leaves these sites out with ``observed_names``). With other
    objectives it is a non-reparameterised guide (score-function gradients). Markov
    chains are always summed out in the model, so they are left out.

    Parameters
    ----------
    model : MonadicProgram
        The model.
    observed_names : sequence of str, optional
        Sites left out (covered by another guide or given as data).

    Raises
    ------
    GuideError
        If no discrete site with finite support is left, or a site's event shape is not
        ``()`` (one-hot sites are not supported; use ``Categorical``).

    Notes
    -----
    The probabilities start uniform, as Pyro's; sites in subsampled plates keep one set of
    logits per element, selected by the batch's indices.
    """

    has_rsample = False

    def __init__(self, model: MonadicProgram, observed_names: Sequence[str] | None = None) -> None:
        super().__init__(model)
        self.observed_names = tuple(observed_names or ())
        known = set(model.latent_names) | set(model.observed_names)
        unknown = [n for n in self.observed_names if n not in known]
        if unknown:
            raise GuideError(f"observed_names: {unknown} are not sites of {type(model).__name__}")
        self.logits = nn.ParameterDict()
        self._names: list[str] = []
        self._plates: dict[str, dict[str, int]] = {}
        self._index_support: dict[str, bool] = {}  # the support is 0, ..., K - 1
        nb = model.batch_ndim
        for info in model.latent_sites():
            step = model.latent_step(info.name)
            if (info.name in self.observed_names or not info.is_discrete or isinstance(step, Markov)
                    or not info.prior.has_enumerate_support):
                continue
            unsized = [p.name for p in step.plates if p.size is None]
            if unsized:
                raise GuideError(f"AutoDiscreteParallel: site {info.name!r} sits in plate(s) {unsized} of unknown "
                                 "size; its probabilities are per element: pass the plate's size to the model")
            if info.event_shape:
                raise GuideError(
                    f"AutoDiscreteParallel: site {info.name!r} has event_shape {tuple(info.event_shape)}; only sites "
                    "with event_shape () are supported (use Categorical, not OneHotCategorical)")
            support = info.prior.enumerate_support(expand=False).reshape(-1)
            self.register_buffer(f"_support_{info.name}", support.clone(), persistent=False)
            self._index_support[info.name] = torch.equal(support, torch.arange(support.numel(), dtype=support.dtype))
            self.logits[info.name] = nn.Parameter(torch.zeros(info.batch_shape + (support.numel(),),
                                                              dtype=torch.get_default_dtype()))
            self._plates[info.name] = {p.name: nb + model.plate_dim(p.name) for p in step.plates}
            self._names.append(info.name)
        if not self._names:
            raise GuideError(f"AutoDiscreteParallel: {type(model).__name__} has no discrete latent site with finite "
                             f"support to guide (observed_names={list(self.observed_names)})")

    @property
    def latent_names(self) -> list[str]:
        return list(self._names)

    def _support(self, name: str) -> torch.Tensor:
        return getattr(self, f"_support_{name}")

    def enumerated_log_probs(self, batch: Batch = None) -> dict[str, torch.Tensor]:
        """``log q`` of each site, shape ``batch_shape + (K,)`` (the batch's subsample)."""
        batch = self.model.prepare(batch, subsample=False)
        out = {}
        for name in self._names:
            x = self.logits[name]
            for p, dim in self._plates[name].items():
                if p in batch:
                    x = x.index_select(dim, batch[p].to(x.device))
            out[name] = F.log_softmax(x, -1)
        return out

    def site_posteriors(self, batch: Batch = None) -> dict[str, Categorical] | None:
        """``Categorical(logits)`` per site (their values are the support's values when the
        support is ``0, ..., K - 1``, as for ``Categorical``, ``Bernoulli`` and ``Binomial``);
        ``None`` for another support."""
        out = {}
        for name, lq in self.enumerated_log_probs(batch).items():
            if not self._index_support[name]:
                return None
            out[name] = Categorical(logits=lq)
        return out

    def rsample_and_log_prob_terms(
        self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = (),
    ) -> tuple[Sites, LogProbTerms]:
        """Draws of each site (not reparameterised) and their ``log q``, one term per site."""
        ss = torch.Size(sample_shape)
        z, terms = {}, {}
        for name, lq in self.enumerated_log_probs(batch).items():
            q = Categorical(logits=lq)
            k = q.sample(ss)
            z[name] = self._support(name).to(lq.device)[k]
            terms[(name,)] = reduce_to_sample(q.log_prob(k), ss)
        return z, terms

    def rsample(self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = ()) -> Sites:
        return self.rsample_and_log_prob_terms(batch, sample_shape)[0]

    def log_prob_terms(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> LogProbTerms:
        terms = {}
        for name, lq in self.enumerated_log_probs(batch).items():
            v = sites[name]
            support = self._support(name).to(device=v.device, dtype=v.dtype)
            k = (v.unsqueeze(-1) == support).long().argmax(-1)
            ss = v.shape[: v.dim() - (lq.dim() - 1)]
            terms[(name,)] = reduce_to_sample(Categorical(logits=lq).log_prob(k), ss)
        return terms

    def log_prob(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack(torch.broadcast_tensors(*self.log_prob_terms(batch, sites).values())).sum(0)
