"""``AutoDAIS`` and ``AutoSurrogateLikelihoodDAIS``: a Gaussian guide followed by ``K`` steps
of differentiable annealed importance sampling over the flat latent vector (NumPyro's)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import GuideError
from ..program import MonadicProgram, PreparedBatch, subsample_scale
from .annealing import HamiltonianAnnealing
from .continuous import AutoContinuous
from .gaussian import AutoDiagonalNormal, AutoMultivariateNormal
from .guide import Batch, LogProbTerms, Sites
from .initialization import InitFn, init_to_median
from .registry import LatentRegistry

__all__ = ["AutoDAIS", "AutoSurrogateLikelihoodDAIS"]

_BASES = {"diagonal": AutoDiagonalNormal, "cholesky": AutoMultivariateNormal}


class AutoDAIS(AutoContinuous):
    """Differentiable annealed importance sampling over all latents (NumPyro's ``AutoDAIS``).

    A draw is ``u_0 ~ q_0``, a Normal over the flat unconstrained latent vector (diagonal
    or full-rank), moved by ``K`` steps of uncorrected Hamiltonian annealing from ``q_0``
    towards the unconstrained posterior ``p(x, T(u)) |det J_T(u)|``
    (:class:`~quivers.guides.annealing.HamiltonianAnnealing`); the site values are the
    final state ``u_K`` constrained. The objectives' ``log p - log q`` is the log
    importance weight on the extended space of the chain (positions and momenta), so
    ``Trace_ELBO`` optimises a lower bound of the log evidence that is tighter than the
    base Normal's and approaches it as ``K`` grows (Geffner & Domke 2021; Zhang et al.
    2021), and ``RenyiELBO`` and the PSIS diagnostic work on the same weights. After
    :func:`~quivers.guides.laplace_warm_start` (which ``SVI.run`` does) the annealing runs
    in the Laplace Gaussian's whitened coordinates (buffers ``precond_loc``,
    ``precond_tril``): a dense mass matrix equal to the Laplace precision.

    The draws' own density (the marginal of ``u_K``) is intractable: :meth:`log_prob`
    raises, so ``Trace_ELBO(stl=True)`` and score-function objectives do not apply. Each
    draw costs ``K`` gradients of the model's log joint (with a graph for the guide's
    gradients during training), on the full data: no subsampling (use
    :class:`AutoSurrogateLikelihoodDAIS` or :class:`~quivers.guides.AutoSemiDAIS`).

    Parameters
    ----------
    model : MonadicProgram
        The model; every latent global.
    K : int
        Annealing steps (default 4).
    base_dist : {"diagonal", "cholesky"}
        The base ``q_0``: :class:`AutoDiagonalNormal` or :class:`AutoMultivariateNormal`
        (its ``base`` attribute).
    eta_init, eta_max, gamma_init : float
        Initial step size (in ``(0, eta_max)``, default 0.01), largest step size (default
        0.1) and initial momentum damping (in ``(0, 1)``, default 0.9); see
        :class:`~quivers.guides.annealing.HamiltonianAnnealing` (its ``annealing``
        attribute).
    init_loc_fn : callable or str
        Init strategy of the base's location (default :func:`init_to_median`).
    init_scale : float
        Initial scale of the base (default 0.1).
    observed_names : sequence of str, optional
        Sites left out of the guide.
    learn_mass : bool
        Learn the annealing's diagonal mass (NumPyro does); by default it is fixed at 1,
        in the Laplace Gaussian's whitened coordinates after a warm start
        (:class:`~quivers.guides.annealing.HamiltonianAnnealing` says why).

    Raises
    ------
    GuideError
        On a bad ``K``, ``base_dist``, ``eta_init``, ``eta_max``, ``gamma_init`` or
        ``init_scale``; if a plate subsamples (``subsample_size``) or a latent is local,
        here, or if a batch is a minibatch of a plate, at the draw; as
        :class:`AutoContinuous`.
    """

    def __init__(
        self,
        model: MonadicProgram,
        K: int = 4,
        base_dist: str = "diagonal",
        eta_init: float = 0.01,
        eta_max: float = 0.1,
        gamma_init: float = 0.9,
        init_loc_fn: InitFn | str = init_to_median,
        init_scale: float = 0.1,
        observed_names: Sequence[str] | None = None,
        learn_mass: bool = False,
    ) -> None:
        if base_dist not in _BASES:
            raise GuideError(f"{type(self).__name__}: base_dist must be 'diagonal' or 'cholesky', got {base_dist!r}")
        super().__init__(model, observed_names, init_loc_fn)
        self._check_subsampling_plates()
        self.base_dist = base_dist
        self.base = _BASES[base_dist](model, observed_names, init_loc_fn=init_loc_fn, init_scale=init_scale)
        self.annealing = HamiltonianAnnealing(K, self.latent_dim, eta_init, eta_max, gamma_init, learn_mass,
                                              dtype=self.base.loc.dtype)
        # the annealing runs in w, u = precond_loc + precond_tril w: the identity until a warm start
        # sets the Laplace Gaussian (a dense mass matrix equal to the posterior precision)
        self.register_buffer("precond_loc", torch.zeros_like(self.base.loc.detach()))
        self.register_buffer("precond_tril", torch.eye(self.latent_dim, dtype=self.base.loc.dtype,
                                                       device=self.base.loc.device))

    @property
    def K(self) -> int:
        """Number of annealing steps."""
        return self.annealing.K

    def _check_subsampling_plates(self) -> None:
        sub = [p.name for p in self.model.plates.values() if p.subsample_size is not None]
        if sub:
            raise GuideError(
                f"{type(self).__name__} cannot be used with data subsampling (plates {sub} set subsample_size): "
                "its annealing needs the full log joint; use AutoSurrogateLikelihoodDAIS (global latents) or "
                "AutoSemiDAIS (local latents)")

    # ------------------------------------------------------------------ the annealing target
    def _log_target(self, batch: Mapping[str, Any]):
        """``u -> log p(x, T(u)) + log|det J_T(u)|`` on ``batch`` (full plates), summed to
        the sample shape."""
        missing = [n for n in self.model.observed_names if n not in batch]
        if missing:
            raise GuideError(
                f"{type(self).__name__}: its draws anneal towards the posterior of the data, but the batch lacks the "
                f"observed sites {missing}; pass the training batch (to predict on new inputs, draw the latents "
                "with the training batch and pass them to Predictive(model, posterior_samples=...))")
        scale = subsample_scale(tuple(self.model.plates.values()), batch)
        if scale != 1.0:
            raise GuideError(
                f"{type(self).__name__} cannot be used with data subsampling: this batch is a minibatch (subsample "
                f"scale {scale:g}); pass full batches, or use AutoSurrogateLikelihoodDAIS / AutoSemiDAIS")
        return self._unconstrained_log_joint(self.model, batch)

    def _unconstrained_log_joint(self, program: MonadicProgram, batch: Mapping[str, Any]):
        """``u -> log p(batch, T(u)) + log|det J_T(u)|``, summed to the sample shape. The
        values of latent sites other guides drew (an ``AutoGuideList``'s earlier parts, in
        the batch with their sample dims) enter the trace as values, not as data."""
        others = {k: v for k, v in batch.items() if k in program.latent_names and k not in self.registry}
        data = PreparedBatch({k: v for k, v in batch.items() if k not in others})
        data.plate_rows = dict(getattr(batch, "plate_rows", {}))

        def log_density(u: torch.Tensor) -> torch.Tensor:
            ss = u.shape[:-1]
            values, log_det = self._constrain(u, ss, batch)
            return program.trace(data, {**others, **values}, ss).log_joint() + log_det

        return log_density

    # ------------------------------------------------------------------ Guide API
    def rsample_and_log_prob_terms(
        self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = (),
    ) -> tuple[Sites, LogProbTerms]:
        batch = self._prepare(batch)
        ss = torch.Size(sample_shape)
        target = self._log_target(batch)  # raises on a minibatch before anything is drawn
        u0, log_q0 = self.base._flat_rsample(batch, ss)
        shift, tril = self.precond_loc, self.precond_tril

        def to_u(w: torch.Tensor) -> torch.Tensor:
            return shift + w @ tril.mT

        w0 = torch.linalg.solve_triangular(tril, (u0 - shift).unsqueeze(-1), upper=False).squeeze(-1)
        # the base's density is built inside the chain, where argument checks are off
        w, log_factor = self.annealing(w0, lambda x: self.base._flat_posterior(batch).log_prob(to_u(x)),
                                       lambda x: target(to_u(x)))
        u = to_u(w)  # a linear map: its constant Jacobian cancels between q and p in the weights
        values, log_det = self._constrain(u, ss, batch)
        return values, {tuple(self.registry.names): log_q0 + log_factor - log_det}

    def log_prob_terms(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> LogProbTerms:
        """Not available: the density of the annealed draws is intractable.

        Raises
        ------
        GuideError
            Always; objectives use :meth:`rsample_and_log_prob_terms` (the extended-space
            density of the draws it returns).
        """
        raise GuideError(
            f"{type(self).__name__} has no tractable log_prob of given values (the annealed chain's marginal); "
            "use objectives that draw from the guide (Trace_ELBO, RenyiELBO), not Trace_ELBO(stl=True)")

    # ------------------------------------------------------------------ warm start
    @torch.no_grad()
    def _set_moments(self, loc: torch.Tensor, cov: torch.Tensor) -> None:
        """Warm-start hook: the base takes the Laplace Gaussian (``loc``: ``(D,)``, ``cov``:
        ``(D, D)``) and the annealing runs in its whitened coordinates ``w`` with
        ``u = loc + chol(cov) w`` and unit mass: a dense mass matrix equal to the Laplace
        precision, so that ``eta`` is in posterior standard deviations in every direction
        and a correlated or badly scaled posterior does not make the leapfrog unstable."""
        self.base._set_moments(loc, cov)
        self.precond_loc.copy_(loc)
        self.precond_tril.copy_(torch.linalg.cholesky(cov))
        self.annealing.set_mass(torch.ones_like(loc))

    def _search_start(self) -> torch.Tensor:
        """Where a warm start's MAP search starts: the base's location (the annealed
        draws' median would need draws from an annealing not yet tuned to the posterior)."""
        return self.base._unconstrained_median()

    @property
    def has_whitened_form(self) -> bool:
        """The base's (the Gaussian guides have one)."""
        return self.base.has_whitened_form

    @contextmanager
    def whitened(self, shift: torch.Tensor, cov: torch.Tensor) -> Iterator[None]:
        """Train the base in whitened coordinates (:meth:`AutoContinuous.whitened` of the
        base); the annealing keeps the coordinates :meth:`_set_moments` chose."""
        with self.base.whitened(shift, cov):
            yield

    def _loc_whitening(self, cov: torch.Tensor) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """For :class:`~quivers.infer.WhitenedAdam`: the base's location, as the base's."""
        return self.base._loc_whitening(cov)


class AutoSurrogateLikelihoodDAIS(AutoDAIS):
    """DAIS whose annealing path follows a cheap surrogate of the posterior, so that it
    works with data subsampling (NumPyro's ``AutoSurrogateLikelihoodDAIS``; Jankowiak &
    Phan 2022, "Surrogate likelihoods for variational annealed importance sampling").

    As :class:`AutoDAIS`, but the leapfrog steps follow ``q_0^(1-beta) s^beta`` where ``s``
    is ``surrogate_model``'s unconstrained joint on ``surrogate_batch``: the same prior and a
    parametric stand-in for the likelihood, typically the likelihood of a fixed subset of
    the data weighted by learnable positive weights (``nn.Parameter`` s of the surrogate
    program, trained with the guide: the surrogate is registered as the submodule
    ``surrogate_model``). Only the path uses the surrogate; the objectives' weights use
    the model on each minibatch, scaled as usual, so the bound stays a bound of the true
    log evidence. Global latents only.

    Parameters
    ----------
    model : MonadicProgram
        The model; every latent global (plates may subsample the data).
    surrogate_model : MonadicProgram
        A program with latent sites of the same names, shapes and supports as the
        model's (every site this guide covers), evaluated on ``surrogate_batch`` without
        subsampling.
    surrogate_batch : mapping, optional
        The surrogate's data (stored as buffers of the guide, so they follow its device).
    K, base_dist, eta_init, eta_max, gamma_init, init_loc_fn, init_scale, observed_names, learn_mass
        As :class:`AutoDAIS`.

    Raises
    ------
    GuideError
        If the surrogate lacks a site or a site differs in shape or support, or as
        :class:`AutoDAIS` (subsampling excepted).
    """

    def __init__(
        self,
        model: MonadicProgram,
        surrogate_model: MonadicProgram,
        surrogate_batch: Mapping[str, torch.Tensor] | None = None,
        K: int = 4,
        base_dist: str = "diagonal",
        eta_init: float = 0.01,
        eta_max: float = 0.1,
        gamma_init: float = 0.9,
        init_loc_fn: InitFn | str = init_to_median,
        init_scale: float = 0.1,
        observed_names: Sequence[str] | None = None,
        learn_mass: bool = False,
    ) -> None:
        if not isinstance(surrogate_model, MonadicProgram):
            raise GuideError(f"AutoSurrogateLikelihoodDAIS: surrogate_model must be a MonadicProgram, "
                             f"got {type(surrogate_model).__name__}")
        super().__init__(model, K, base_dist, eta_init, eta_max, gamma_init, init_loc_fn, init_scale, observed_names,
                         learn_mass)
        _check_same_sites(self.registry, surrogate_model)
        surrogate_model.prepare(surrogate_batch, subsample=False)  # checks the batch before anything is kept
        self.surrogate_model = surrogate_model
        self._surrogate_fields = nn.Module()
        for name, value in (surrogate_batch or {}).items():
            self._surrogate_fields.register_buffer(name, torch.as_tensor(value))

    def _check_subsampling_plates(self) -> None:
        """Subsampling is what this guide is for."""

    @property
    def surrogate_batch(self) -> dict[str, torch.Tensor]:
        """The surrogate's data (on the guide's device)."""
        return dict(self._surrogate_fields.named_buffers())

    def _log_target(self, batch: Mapping[str, Any]):
        """``u -> log s(T(u)) + log|det J_T(u)|``: the surrogate's unconstrained joint."""
        data = self.surrogate_model.prepare(self.surrogate_batch, subsample=False)
        return self._unconstrained_log_joint(self.surrogate_model, data)


def _check_same_sites(registry: LatentRegistry, surrogate: MonadicProgram) -> None:
    """The surrogate must have each guided site with the same shape and support."""
    theirs = {info.name: info for info in surrogate.latent_sites()}
    for site in registry:
        other = theirs.get(site.name)
        if other is None:
            raise GuideError(f"AutoSurrogateLikelihoodDAIS: surrogate_model has no latent site {site.name!r} "
                             f"(its latent sites: {sorted(theirs)}); it needs every site the guide covers")
        if other.shape != site.shape or str(other.support) != str(site.support):
            raise GuideError(
                f"AutoSurrogateLikelihoodDAIS: latent site {site.name!r} has shape {tuple(site.shape)} and support "
                f"{site.support} in the model but {tuple(other.shape)} and {other.support} in surrogate_model")
