"""Evidence lower bound objectives as ``nn.Module`` s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution, kl_divergence

from ..errors import ConfigError, GuideError, ShapeError
from ..guides.guide import Guide, LogProbTerms, Sites
from ..program import MonadicProgram, Trace
from ..program.enumeration import enumerated_names
from ..shapes import fmt_shape, reduce_to_sample
from ..spec import Recordable
from ..validation import check_positive_int
from .enumerated import model_log_density

__all__ = ["ELBO", "Trace_ELBO", "TraceMeanField_ELBO", "scaled_log_q", "weighted_draws"]


class ELBO(Recordable, nn.Module):
    """Base class of ELBO objectives: ``forward(model, guide, batch)`` is the loss.

    The loss is the negative ELBO, ``-E_q[log p(data, z) - log q(z)]``, estimated
    with ``num_particles`` draws from the guide and averaged over them. Particles are
    vectorised along a leading ``sample_shape = (num_particles,)`` (no Python loop) unless
    ``vectorize_particles=False``, for models whose step functions do not broadcast.

    Parameters
    ----------
    num_particles : int
        Number of Monte Carlo draws per step.
    vectorize_particles : bool
        Draw all particles in one vectorised pass (default) or loop over them.

    Raises
    ------
    ConfigError
        If ``num_particles`` is not a positive integer.
    """

    def __init__(self, num_particles: int = 1, vectorize_particles: bool = True) -> None:
        super().__init__()
        self.num_particles = check_positive_int(num_particles, "num_particles", ConfigError)
        self.vectorize_particles = bool(vectorize_particles)

    def particle_elbos(self, model: MonadicProgram, guide: Guide, batch: Mapping[str, Any] | None) -> torch.Tensor:
        """Per-particle surrogate ELBO (its value is the ELBO; its gradient the estimator).

        Returns
        -------
        torch.Tensor
            Shape ``(num_particles,)``.
        """
        batch = model.prepare(batch)
        if self.vectorize_particles:
            return self._particles(model, guide, batch, torch.Size((self.num_particles,)))
        return torch.cat([self._particles(model, guide, batch, torch.Size((1,))) for _ in range(self.num_particles)])

    def _particles(self, model: MonadicProgram, guide: Guide, batch: Mapping[str, Any], ss: torch.Size) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, model: MonadicProgram, guide: Guide, batch: Mapping[str, Any] | None = None) -> torch.Tensor:
        """Differentiable loss: the negative ELBO averaged over particles (a scalar)."""
        return -self.particle_elbos(model, guide, batch).mean()

    differentiable_loss = forward

    @torch.no_grad()
    def loss(self, model: MonadicProgram, guide: Guide, batch: Mapping[str, Any] | None = None) -> float:
        """The negative ELBO as a float, without gradients."""
        return float(self.forward(model, guide, batch))


class Trace_ELBO(ELBO):
    """Monte Carlo ELBO with reparameterised gradients (Pyro's ``Trace_ELBO``).

    For guides whose samples are reparameterised (``guide.has_rsample``), the gradient
    is that of ``log p(x, z) - log q(z)`` at ``z = g(eps, phi)`` (Kingma & Welling 2014).
    Under subsampling each term of ``log q`` is scaled by its sites' ``size / batch rows``
    in the model's trace (:func:`scaled_log_q`), as the model's terms are: a guide's
    ``log_prob`` is the plain density of the minibatch's local latents.
    For guides that set ``has_rsample = False`` the samples are detached and the
    score-function term ``log q(z) * stop_grad(log p - log q)`` is added (Williams 1992;
    Ranganath et al. 2014, "Black Box Variational Inference").

    Parameters
    ----------
    num_particles, vectorize_particles
        See :class:`ELBO`.
    stl : bool
        The sticking-the-landing estimator (Roeder, Wu & Duvenaud 2017): ``log q(z)`` is
        evaluated with the guide's parameters detached, so only the path through ``z``
        carries gradient. Same value and expectation; at the exact posterior its gradient
        is zero for every draw, so the noise vanishes as the guide fits. Costs one
        :meth:`~quivers.guides.Guide.log_prob_terms` per step (the inverse of a flow).
        Reparameterised guides only.

    Raises
    ------
    ConfigError
        If ``num_particles`` is not a positive integer.
    GuideError
        With ``stl=True``, at the first step, if the guide is not reparameterised.
    """

    def __init__(self, num_particles: int = 1, vectorize_particles: bool = True, stl: bool = False) -> None:
        super().__init__(num_particles, vectorize_particles)
        self.stl = bool(stl)

    def _particles(self, model: MonadicProgram, guide: Guide, batch: Mapping[str, Any], ss: torch.Size) -> torch.Tensor:
        if not guide.has_rsample:
            if self.stl:
                raise GuideError(f"Trace_ELBO(stl=True) needs a reparameterised guide; {type(guide).__name__} is not")
            z = {k: v.detach() for k, v in guide.rsample(batch, ss).items()}
            log_p, tr = model_log_density(model, batch, z, ss)
            log_q = scaled_log_q(tr, guide.log_prob_terms(batch, z), guide)
            elbo = log_p - log_q
            surrogate = elbo + log_q * elbo.detach()
            return elbo.detach() + (surrogate - surrogate.detach())
        return weighted_draws(model, guide, batch, ss, detach_guide=self.stl)[1]


def weighted_draws(model: MonadicProgram, guide: Guide, batch: Mapping[str, Any], ss: torch.Size,
                   detach_guide: bool = False) -> tuple[Sites, torch.Tensor]:
    """Reparameterised draws ``z ~ q`` (trace layout, leading ``ss``) and their log weights
    ``log p(x, z) - log q(z)`` (shape ``ss``), with the model's enumerated sites summed out
    of ``log p`` (:func:`~quivers.infer.enumerated.model_log_density`).

    With ``detach_guide``, ``log q`` is evaluated at ``z`` with the guide's parameters
    detached (``torch.func.functional_call``): the gradient flows only through ``z`` (the
    path derivative of Roeder et al. 2017, the building block of STL and DReG).
    """
    z, terms = guide.rsample_and_log_prob_terms(batch, ss)
    if detach_guide:
        frozen = {name: p.detach() for name, p in guide.named_parameters()}
        terms = torch.func.functional_call(_LogProbTerms(guide), {f"guide.{k}": v for k, v in frozen.items()},
                                           (batch, z), strict=False)
    log_p, tr = model_log_density(model, batch, z, ss)
    return z, log_p - scaled_log_q(tr, terms, guide)


class _LogProbTerms(nn.Module):
    """``forward`` is the guide's ``log_prob_terms`` (what ``functional_call`` can call)."""

    def __init__(self, guide: Guide) -> None:
        super().__init__()
        self.guide = guide

    def forward(self, batch: Mapping[str, Any], z: Mapping[str, torch.Tensor]) -> LogProbTerms:
        return self.guide.log_prob_terms(batch, z)


def scaled_log_q(tr: Trace, terms: LogProbTerms, guide: Guide) -> torch.Tensor | float:
    """The guide's log-density with each term scaled by its sites' subsample scale in the
    model's trace (``size / batch rows`` per subsampled plate), as the model's own terms are.

    Raises
    ------
    GuideError
        If one term covers sites whose scales differ (the guide must split it, see
        :meth:`~quivers.guides.Guide.log_prob_terms`).
    ShapeError
        If a term's shape is neither the trace's ``sample_shape`` nor ``()`` (a user
        guide's ``log_prob`` not summed over its sites' batch and event dims would
        broadcast silently).
    """
    total: torch.Tensor | float = 0.0
    for names, lq in terms.items():
        if isinstance(lq, torch.Tensor) and lq.dim() and lq.shape != tr.sample_shape:  # 0-d: a constant
            raise ShapeError(
                f"{type(guide).__name__}.log_prob gives shape {fmt_shape(lq.shape)} for sites {list(names)}, "
                f"expected sample_shape {fmt_shape(tr.sample_shape)}: sum the log-density over each site's batch "
                "and event dims"
            )
        scales = {tr[n].scale for n in names if n in tr}
        if len(scales) > 1:
            raise GuideError(
                f"{type(guide).__name__}.log_prob_terms gives one term for sites {list(names)}, whose subsample "
                f"scales differ in this batch ({sorted(scales)}); return one term per group of sites that share "
                "their plates (override log_prob_terms), so each can be scaled like the model's"
            )
        scale = scales.pop() if scales else 1.0
        total = total + (lq * scale if scale != 1.0 else lq)
    return total


class TraceMeanField_ELBO(Trace_ELBO):
    """ELBO with analytic KL terms for mean-field guides (Pyro's ``TraceMeanField_ELBO``).

    For a guide whose latent sites are mutually independent (it returns per-site
    distributions from :meth:`~quivers.guides.Guide.site_posteriors`), the ELBO is
    ``E_q[log p(x | z)] - sum_i E_q[KL(q(z_i) || p(z_i | parents))]``. Each KL whose
    pair of distribution types ``torch.distributions`` registers (Normal-Normal, for
    instance) is computed in closed form at the sampled parents, which removes its Monte
    Carlo noise; other sites keep the ``log p - log q`` estimate. For guides that are not
    mean-field this is :class:`Trace_ELBO`. Expectations agree with ``Trace_ELBO``; the
    variance is lower (Kingma & Welling 2014, eq. 10; Roeder et al. 2017).

    Parameters
    ----------
    num_particles, vectorize_particles
        See :class:`ELBO`.
    """

    def _particles(self, model: MonadicProgram, guide: Guide, batch: Mapping[str, Any], ss: torch.Size) -> torch.Tensor:
        dists = guide.site_posteriors(batch) if guide.has_rsample else None
        if dists is None or any(n not in dists for n in enumerated_names(model)):
            return super()._particles(model, guide, batch, ss)
        z = {k: d.rsample(ss) for k, d in dists.items()}
        tr = model.trace(batch, z, ss)
        ref = next(iter(z.values()))
        elbo = torch.zeros(ss, dtype=ref.dtype, device=ref.device)
        for name, site in tr.items():
            if site.log_prob is None:
                continue
            if name in dists and site.kind == "latent":
                kl = _analytic_kl(dists[name], site.fn, ss)
                if kl is None:
                    log_q = dists[name].log_prob(z[name])
                    elbo = elbo + site.log_prob - _sum_batch(log_q, ss, dists[name].batch_shape) * site.scale
                else:
                    elbo = elbo - kl * site.scale
            else:
                elbo = elbo + site.log_prob
        return elbo


def _sum_batch(x: torch.Tensor, ss: torch.Size, batch_shape: torch.Size) -> torch.Tensor:
    """A per-element term of shape broadcastable to ``ss + batch_shape``, summed to ``ss``."""
    return reduce_to_sample(x.expand(torch.broadcast_shapes(x.shape, ss + batch_shape)), ss)


def _analytic_kl(q: Distribution, p: Distribution, ss: torch.Size) -> torch.Tensor | None:
    """``KL(q || p)`` summed to shape ``ss``, or ``None`` when no closed form is registered."""
    if p is None or q.event_shape != p.event_shape:
        return None
    try:
        kl = kl_divergence(q, p)
    except NotImplementedError:
        return None
    return _sum_batch(kl, ss, q.batch_shape)
