"""``Guide``: the abstract base of every variational distribution q(z | data)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from ..errors import GuideError
from ..program import MonadicProgram
from ..program.evaluate import deterministic_values
from ..spec import Recordable

__all__ = ["Guide", "check_guide", "LogProbTerms"]

Batch = Mapping[str, Any] | None
Sites = dict[str, torch.Tensor]
LogProbTerms = dict[tuple[str, ...], torch.Tensor]


class Guide(Recordable, nn.Module, ABC):
    """Abstract variational distribution over a model's latent sites.

    A subclass implements :attr:`latent_names`, :meth:`rsample` and :meth:`log_prob`;
    it then works with every objective, ``SVI``, ``SVIModule``, ``Predictive`` and
    checkpoints. Build every parameter in ``__init__`` so that optimizers,
    ``state_dict`` and DDP see them at once.

    Values use the trace layout: ``sample_shape + batch_shape + event_shape`` per site,
    with ``batch_shape`` spanning all of the program's plates, constrained (in the site's
    support). A guide may read anything in the batch, observed values included (an
    encoder that maps ``batch["x"]`` to the local latents' parameters).

    **Subsampling.** :meth:`log_prob` is the plain log-density of the values given: for
    local latents of a minibatch, of those rows only. The objectives scale each latent
    site's term by its plate's ``size / batch rows``, as they scale the model's, so a
    user guide needs no scaling of its own. When a guide covers sites with different
    scales (global and local latents) under subsampling, it says which term belongs to
    which sites by overriding :meth:`log_prob_terms`.

    Parameters
    ----------
    model : MonadicProgram, optional
        The model the guide approximates. With it, :meth:`median`, :meth:`quantiles` and
        :meth:`sample_posterior` return each site in its own layout (see
        :mod:`quivers.shapes`) and add the model's deterministic sites; without it they
        return what :meth:`rsample` returns. It is referenced, not registered as a
        submodule.

    Attributes
    ----------
    has_rsample : bool
        ``True`` when :meth:`rsample` is reparameterised (differentiable in the guide's
        parameters). Objectives use the score-function (REINFORCE) estimator for guides
        that set it to ``False``.
    """

    has_rsample: bool = True

    def __init__(self, model: MonadicProgram | None = None) -> None:
        super().__init__()
        if model is not None:
            object.__setattr__(self, "model", model)  # a reference, not a submodule

    @property
    @abstractmethod
    def latent_names(self) -> list[str]:
        """Names of the latent sites this guide samples, in order."""

    @abstractmethod
    def rsample(self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = ()) -> Sites:
        """Draw reparameterised samples.

        Parameters
        ----------
        batch : mapping, optional
            The batch (guides with local latents read subsample indices from it; an
            amortised guide reads the data).
        sample_shape : torch.Size
            Particle shape.

        Returns
        -------
        dict
            ``{site name: value}``, shape ``sample_shape + batch_shape + event_shape``.
        """

    @abstractmethod
    def log_prob(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Log-density ``log q(z | batch)`` of latent values, summed over sites, unscaled
        (see the class docstring on subsampling).

        Returns
        -------
        torch.Tensor
            Shape ``sample_shape``.
        """

    def log_prob_terms(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> LogProbTerms:
        """``log q`` split into terms, each over a tuple of sites that share one
        subsample scale: ``{(site, ...): log-density}``, each of shape ``sample_shape``,
        unscaled; the terms sum to :meth:`log_prob`.

        The default is one term over every site, which objectives accept whenever the
        sites share their scale (all global, or all local to one subsampled plate).
        """
        return {tuple(self.latent_names): self.log_prob(batch, sites)}

    def rsample_and_log_prob(
        self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = (),
    ) -> tuple[Sites, torch.Tensor]:
        """Draw samples and their (unscaled) log-density in one call."""
        z, terms = self.rsample_and_log_prob_terms(batch, sample_shape)
        return z, _total(terms, sample_shape, z)

    def rsample_and_log_prob_terms(
        self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = (),
    ) -> tuple[Sites, LogProbTerms]:
        """Draw samples and their :meth:`log_prob_terms` in one call (objectives call this).

        The default calls :meth:`rsample` then :meth:`log_prob_terms`; built-in guides
        override it to reuse intermediate results.
        """
        z = self.rsample(batch, sample_shape)
        return z, self.log_prob_terms(batch, z)

    def enumerated_log_probs(self, batch: Batch = None) -> dict[str, torch.Tensor]:
        """Sites this guide enumerates in parallel (Pyro's guide-side enumeration).

        ``{site: log q}``, each of shape ``batch_shape + (K,)`` in the trace layout (the
        batch's subsample along subsampled plates), normalised over the ``K`` values of
        the model prior's ``enumerate_support`` in that order, and not depending on other
        draws. :class:`~quivers.infer.TraceEnum_ELBO` takes the expectation over these
        sites exactly instead of sampling them. The default, ``{}``, enumerates nothing.
        """
        return {}

    def site_posteriors(self, batch: Batch = None) -> dict[str, Distribution] | None:
        """Independent per-site distributions of the constrained values, or ``None``.

        A guide whose sites are mutually independent (mean-field) may return
        ``{site: q(z_site)}`` with batch shape the site's (subsampled) batch shape and the
        site's event shape; :class:`~quivers.infer.TraceMeanField_ELBO` then uses an
        analytic ``KL(q || prior)`` wherever ``torch.distributions`` registers one. The
        default, ``None``, means the guide is not mean-field (or does not say).
        """
        return None

    def forward(self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = ()) -> Sites:
        """Alias of :meth:`rsample`."""
        return self.rsample(batch, sample_shape)

    # ------------------------------------------------------------------ trace-layout hooks
    @torch.no_grad()
    def draws(self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = ()) -> Sites:
        """Posterior draws of the latent sites in the trace layout, without gradients
        (what ``Predictive`` and the objectives' diagnostics consume). The default detaches
        :meth:`rsample`; a guide whose training distribution is not its posterior
        (``AutoLaplaceApproximation``) overrides it."""
        return {k: v.detach() for k, v in self.rsample(batch, sample_shape).items()}

    @torch.no_grad()
    def latent_median(self, batch: Batch = None, num_samples: int = 1000) -> Sites:
        """Marginal posterior median of each latent site, trace layout. The default is
        the elementwise median of ``num_samples`` draws; built-in guides override it
        with the exact value where one exists."""
        return _medians(self.draws(batch, (num_samples,)))

    @torch.no_grad()
    def latent_quantiles(self, q: torch.Tensor, batch: Batch = None, num_samples: int = 1000) -> Sites:
        """Marginal quantiles ``q`` (1-D) of each latent site, trace layout with a leading
        quantile dim. The default estimates them from ``num_samples`` draws."""
        return _quantiles(self.draws(batch, (num_samples,)), q)

    # ------------------------------------------------------------------ what users read
    @torch.no_grad()
    def sample_posterior(self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = (), *,
                         psis: bool = False, num_particles: int | None = None) -> Sites:
        """Draw from the posterior approximation (Pyro's/NumPyro's ``sample_posterior``).

        Parameters
        ----------
        batch : mapping, optional
            The data (needed by guides that read it, by deterministic sites, and by ``psis``).
        sample_shape : sequence of int
            Leading shape of the draws.
        psis : bool
            Correct the guide by importance resampling: draw ``num_particles`` values
            from the guide, weight each by ``p(x, z) / q(z)`` on the full batch, smooth the
            weights' tail with ArviZ's Pareto smoothing, and resample with replacement
            (:func:`~quivers.infer.psis.psis_resample`; Vehtari et al. 2024). The draws
            then follow the posterior more closely than the guide's own wherever the
            guide covers it; a ``UserWarning`` says when the PSIS k-hat is 0.7 or more,
            where they cannot be trusted either. Needs a model (the guide's).
        num_particles : int, optional
            Pool size for ``psis`` (default ``max(1000, 10 * draws)``).

        Returns
        -------
        dict
            ``{site name: value}`` for the latent sites and, with a model, every
            deterministic site computable from them and the batch; each of shape
            ``sample_shape + site shape`` (the site's own layout, see :mod:`quivers.shapes`).

        Raises
        ------
        GuideError
            If ``psis=True`` and the guide has no model.
        """
        ss = torch.Size(sample_shape)
        model = self._model()
        if psis:
            if model is None:
                raise GuideError(f"{type(self).__name__}.sample_posterior(psis=True) needs the guide's model")
            from ..infer.psis import psis_resample

            flat, _ = psis_resample(model, self, batch, max(ss.numel(), 1), num_particles)
            z = {k: v.reshape(ss + v.shape[1:]) for k, v in flat.items()}
        else:
            z = self.draws(batch, ss)
        if model is None:
            return z
        prepared = model.prepare(batch, subsample=False)
        out = {**z, **deterministic_values(model, prepared, z, ss)}
        return {k: model.to_site_layout(k, v, len(ss)) for k, v in out.items()}

    @torch.no_grad()
    def median(self, batch: Batch = None, *, num_samples: int = 1000) -> Sites:
        """Marginal posterior median of each site.

        Exact for latent sites whose ``biject_to`` transform is elementwise and
        increasing in guides with a closed form (the Gaussian family, ``AutoNormal``,
        ``AutoDelta``); otherwise, and for deterministic sites (functions of several
        latents, whose median is not the function of the medians), the elementwise
        median of ``num_samples`` posterior draws.

        Returns
        -------
        dict
            ``{site name: value}`` in each site's own layout (a global scalar has shape
            ``()``), with the model's computable deterministic sites.
        """
        out = {**self.latent_median(batch, num_samples), **_medians(self._deterministic_draws(batch, num_samples))}
        return self._site_layout(out, 0)

    @torch.no_grad()
    def quantiles(self, quantiles: float | Sequence[float] | torch.Tensor, batch: Batch = None, *,
                  num_samples: int = 1000) -> Sites:
        """Marginal posterior quantiles of each site (exact where :meth:`median` is).

        Parameters
        ----------
        quantiles : float or sequence of float
            Probabilities in ``[0, 1]``; a scalar adds no quantile dimension.

        Returns
        -------
        dict
            ``{site name: tensor}`` of shape ``(len(quantiles),) + site shape``, or the
            site shape for a scalar.

        Raises
        ------
        ValueError
            If a probability lies outside ``[0, 1]``.
        """
        q, scalar = _check_quantiles(quantiles)
        dets = _quantiles(self._deterministic_draws(batch, num_samples), q)
        out = self._site_layout({**self.latent_quantiles(q, batch, num_samples), **dets}, 1)
        return {k: v[0] for k, v in out.items()} if scalar else out

    # ------------------------------------------------------------------ helpers
    def _model(self) -> MonadicProgram | None:
        model = getattr(self, "model", None)
        return model if isinstance(model, MonadicProgram) else None

    def _site_layout(self, values: Sites, sample_ndim: int) -> Sites:
        model = self._model()
        if model is None:
            return values
        return {k: model.to_site_layout(k, v, sample_ndim) for k, v in values.items()}

    def _deterministic_draws(self, batch: Batch, num_samples: int) -> Sites:
        """``num_samples`` draws of the model's computable deterministic sites (trace layout)."""
        model = self._model()
        if model is None or not any(s.kind == "deterministic" for s in model.steps):
            return {}
        prepared = model.prepare(batch, subsample=False)
        ss = torch.Size((num_samples,))
        z = self.draws(prepared, ss)
        return deterministic_values(model, prepared, z, ss)


def _medians(draws: Sites) -> Sites:
    """Elementwise medians over the leading (draw) dim."""
    return {k: v.median(dim=0).values for k, v in draws.items()}


def _quantiles(draws: Sites, q: torch.Tensor) -> Sites:
    """Elementwise quantiles ``q`` (1-D) over the leading (draw) dim, as a new leading dim."""
    return {k: torch.quantile(v.to(q.dtype), q.to(v.device), dim=0).to(v.dtype) for k, v in draws.items()}


def _total(terms: LogProbTerms, sample_shape: torch.Size | Sequence[int], z: Sites) -> torch.Tensor:
    if terms:
        return sum(terms.values())
    ref = next(iter(z.values()), None)
    kw = {"dtype": ref.dtype, "device": ref.device} if ref is not None else {}
    return torch.zeros(torch.Size(sample_shape), **kw)


def _check_quantiles(quantiles: float | Sequence[float] | torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The probabilities as a 1-D tensor, and whether a scalar was given."""
    t = torch.as_tensor(quantiles, dtype=torch.get_default_dtype())
    scalar = t.dim() == 0
    q = t.reshape(-1)
    if q.numel() == 0 or bool(((q < 0) | (q > 1)).any()) or not bool(torch.isfinite(q).all()):
        raise GuideError(f"quantiles must be finite probabilities in [0, 1], got {q.tolist()}")
    return q, scalar


def check_guide(model: MonadicProgram, guide: Guide, where: str) -> None:
    """Raise unless ``guide`` can serve as the variational distribution of ``model``.

    A guide that records the program it was built for (every autoguide does, as
    ``guide.model``) must have been built for this very instance: another instance has its
    own parameters and may have other sites. Any guide must sample only latent sites of
    ``model``.

    Parameters
    ----------
    model : MonadicProgram
        The model the guide is used with.
    guide : Guide
        The guide.
    where : str
        The caller, for the message (``"SVI"``, ``"SVIModule"``, ``"Predictive"``).

    Raises
    ------
    GuideError
        If the guide was built for another model instance, or samples sites that are not
        latent sites of ``model``.
    """
    built_for = getattr(guide, "model", model)
    if isinstance(built_for, MonadicProgram) and built_for is not model:
        raise GuideError(
            f"{where}: the guide {type(guide).__name__} was built for a different model "
            f"({type(built_for).__name__} at {id(built_for):#x}, not the {type(model).__name__} at {id(model):#x} "
            f"given here); build it on this model, e.g. {type(guide).__name__}(model)"
        )
    latent = set(getattr(model, "latent_names", ()))
    unknown = [n for n in guide.latent_names if n not in latent]
    if unknown:
        raise GuideError(
            f"{where}: the guide {type(guide).__name__} samples {unknown}, which are not latent sites of "
            f"{type(model).__name__} (its latent sites: {sorted(latent)})"
        )
