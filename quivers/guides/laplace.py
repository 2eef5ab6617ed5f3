"""``AutoLaplaceApproximation``: a MAP point, then a Gaussian from the Hessian there."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.distributions import Distribution, Transform

from ..errors import GuideError
from ..program import MonadicProgram, PreparedBatch
from ..program.enumeration import enumerated_names
from .continuous import AutoContinuous
from .gaussian import AutoMultivariateNormal
from .guide import Batch, LogProbTerms, Sites
from .initialization import InitFn, init_to_median
from .map_search import lbfgs_search
from .transforms import LowerCholeskyAffine

__all__ = ["AutoLaplaceApproximation"]

HessianFn = Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor], torch.Tensor]


class AutoLaplaceApproximation(AutoContinuous):
    """Laplace approximation (Pyro's and NumPyro's ``AutoLaplaceApproximation``).

    Training fits a point ``u`` (parameter ``loc``) in unconstrained space: ``q`` is a
    point mass there with ``log q = -log|det J(u)|``, so the ELBO is the unconstrained
    log posterior density and SVI finds its mode. :meth:`laplace_approximation` then
    returns an :class:`AutoMultivariateNormal` centred at ``u`` whose covariance is the
    inverse Hessian of the negative unconstrained log joint at ``u`` (Laplace 1774;
    MacKay 2003, ch. 27).

    Parameters
    ----------
    model : MonadicProgram
        The model.
    observed_names : sequence of str, optional
        Sites left out of the guide.
    init_loc_fn : callable or str
        Init strategy (default :func:`init_to_median`).
    hessian_fn : callable, optional
        ``hessian_fn(f, u) -> (D, D)`` Hessian of the scalar function ``f`` at ``u``;
        default ``torch.autograd.functional.hessian``.
    on_indefinite : {"raise", "jitter"}
        When the Hessian has an eigenvalue <= 0 (``u`` is not a strict local mode): raise
        a :class:`~quivers.errors.GuideError` (default), or raise every eigenvalue below
        ``jitter`` to ``jitter`` (never lowering one) with a ``UserWarning``.
    jitter : float
        Smallest eigenvalue after the correction (``on_indefinite="jitter"``).

    Notes
    -----
    :meth:`rsample` (what training draws) and :meth:`median` give the point; the
    posterior is the Laplace Gaussian: :meth:`sample_posterior`, ``Predictive``,
    :meth:`quantiles`, :meth:`get_posterior` and :meth:`get_transform` use it (as
    NumPyro's), and need the data: pass the batch. Inside an :class:`AutoGuideList`, the
    Hessian conditions on the other parts' medians.
    """

    conditions_on_other_sites = True  # its Hessian fixes the sites other guides cover

    def __init__(
        self,
        model: MonadicProgram,
        observed_names: Sequence[str] | None = None,
        init_loc_fn: InitFn | str = init_to_median,
        hessian_fn: HessianFn | None = None,
        on_indefinite: str = "raise",
        jitter: float = 1e-6,
    ) -> None:
        if on_indefinite not in ("raise", "jitter"):
            raise GuideError(f"on_indefinite must be 'raise' or 'jitter', got {on_indefinite!r}")
        super().__init__(model, observed_names, init_loc_fn)
        self.loc = nn.Parameter(self._init_loc())
        self.hessian_fn = hessian_fn
        self.on_indefinite = on_indefinite
        self.jitter = float(jitter)

    def rsample_and_log_prob_terms(
        self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = (),
    ) -> tuple[Sites, LogProbTerms]:
        """The point (training): ``log q = -log|det J(u)|``."""
        batch = self._prepare(batch)
        ss = torch.Size(sample_shape)
        values, log_det = self._constrain(self.loc.expand(ss + self.loc.shape), ss, batch)
        return values, {tuple(self.registry.names): -log_det}

    def log_prob_terms(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> LogProbTerms:
        batch = self._prepare(batch)
        return {tuple(self.registry.names): -self._unconstrained_and_log_det(sites, batch)[1]}

    def _unconstrained_median(self) -> torch.Tensor:
        """The fitted point (the Laplace Gaussian's median in unconstrained space)."""
        return self.loc

    def _unconstrained_sd(self, batch: PreparedBatch) -> torch.Tensor:
        """Marginal standard deviations of the Laplace Gaussian (needs the data)."""
        return self.laplace_approximation(batch).get_posterior().stddev

    def get_posterior(self, batch: Batch = None) -> Distribution:
        """The Laplace Gaussian over the flat unconstrained vector (needs the batch)."""
        return self.laplace_approximation(batch).get_posterior()

    def get_transform(self, batch: Batch = None) -> Transform:
        """``eps -> loc + L eps`` with ``L L^T = H^-1``: the Laplace Gaussian as a transform of
        :meth:`get_base_dist` (needs the batch; NumPyro's ``get_transform``)."""
        lap = self.laplace_approximation(batch)
        return LowerCholeskyAffine(lap.loc, lap.scale_tril)

    @torch.no_grad()
    def draws(self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = ()) -> Sites:
        """Draws from the Laplace Gaussian (as NumPyro's ``sample_posterior``), not the point."""
        batch = self._prepare(batch)
        return self.laplace_approximation(batch).draws(batch, sample_shape)

    def _potential(self, batch: Batch) -> Callable[[torch.Tensor], torch.Tensor]:
        """``u -> -(log p(data, T(u)) + log|det J_T(u)|)`` on the full batch (no subsampling),
        with enumerated sites summed out of ``log p``.

        Raises
        ------
        GuideError
            If the model has latent sites this guide does not cover and the batch does
            not hold their values.
        """
        prepared = self.model.prepare(batch, subsample=False)
        no_data = [n for n in self.model.observed_names if n not in prepared]
        if no_data:
            raise GuideError(
                f"{type(self).__name__}: the Laplace Gaussian (its draws, quantiles and Hessian) needs the data, "
                f"but the batch lacks the observed sites {no_data}; pass the training batch, or predict on new "
                "inputs with guide.laplace_approximation(training_batch) as the guide"
            )
        summed = set(enumerated_names(self.model))
        missing = [n for n in self.model.latent_names if n not in self.registry and n not in prepared
                   and n not in summed]
        if missing:
            raise GuideError(
                f"{type(self).__name__} covers {self.registry.names}; its Hessian conditions on the other latent "
                f"sites {missing}: pass their values in the batch (inside an AutoGuideList the other parts' "
                "medians are passed for you)"
            )

        from ..infer.enumerated import model_log_density  # objectives build on guides, not the reverse

        def neg_log_density(u: torch.Tensor) -> torch.Tensor:
            values, log_det = self._constrain(u, torch.Size(), prepared)
            return -(model_log_density(self.model, prepared, values, torch.Size())[0] + log_det)

        return neg_log_density

    def hessian(self, batch: Batch = None) -> torch.Tensor:
        """Hessian of the negative unconstrained log joint at ``loc``, shape ``(D, D)``.

        Raises
        ------
        GuideError
            As :meth:`_potential`.
        """
        fn = self.hessian_fn or torch.autograd.functional.hessian
        h = fn(self._potential(batch), self.loc.detach())
        return 0.5 * (h + h.mT)

    def fit_map(self, batch: Batch = None, max_iter: int = 500, tolerance_grad: float = 1e-6) -> float:
        """Move ``loc`` to the mode of the unconstrained log posterior by L-BFGS with a
        strong-Wolfe line search (Nocedal & Wright 2006, alg. 7.5 and 3.5), on the full
        batch: a deterministic alternative to fitting this guide with SVI.

        Parameters
        ----------
        batch : mapping
            The data (every plate in full).
        max_iter : int
            Largest number of L-BFGS iterations.
        tolerance_grad : float
            Stop when the largest gradient entry is below this.

        Returns
        -------
        float
            The negative unconstrained log joint at the final point (nats).

        Raises
        ------
        GuideError
            If the log joint is not finite at the start, or the search reached a
            non-finite value; ``loc`` is then left as it was.
        """
        potential = self._potential(batch)
        start = self.loc.detach().clone()
        with torch.no_grad():
            first = float(potential(start))
        if not math.isfinite(first):
            raise GuideError(f"fit_map: the log joint is not finite at the starting point (got {-first})")
        found = lbfgs_search(potential, start, max_iter, tolerance_grad)
        if not (math.isfinite(found.value) and bool(torch.isfinite(found.point).all())):
            raise GuideError(f"fit_map: L-BFGS reached a non-finite point (log joint {-found.value}); loc left "
                             "unchanged")
        with torch.no_grad():
            self.loc.copy_(found.point)
        return found.value

    @torch.no_grad()
    def _set_moments(self, loc: torch.Tensor, cov: torch.Tensor) -> None:
        """Warm-start hook: the point is ``loc``; a point has no covariance."""
        self.loc.copy_(loc)

    def laplace_approximation(self, batch: Batch = None) -> AutoMultivariateNormal:
        """An :class:`AutoMultivariateNormal` at ``loc`` with covariance ``H^-1``.

        The factor of ``H^-1`` comes from the eigendecomposition of ``H`` in float64, so a
        positive-definite but ill-conditioned Hessian (a posterior much narrower in some
        directions than in others) is accepted.

        Returns
        -------
        AutoMultivariateNormal
            A new guide over the same sites (its ``loc`` and ``scale_tril`` set).

        Raises
        ------
        GuideError
            If the Hessian is not finite, or has an eigenvalue <= 0 (the point is not a
            strict local mode) and ``on_indefinite="raise"``.
        """
        h = self.hessian(batch).detach()
        if not bool(torch.isfinite(h).all()):
            raise GuideError("the Hessian of the negative log joint at the fitted point is not finite")
        scale_tril = self._inverse_factor(h)
        guide = AutoMultivariateNormal(self.model, self.observed_names, init_loc_fn=self.init_loc_fn)
        guide.to(dtype=self.loc.dtype, device=self.loc.device)
        with torch.no_grad():
            guide.loc.copy_(self.loc)
            guide.set_scale_tril(scale_tril.to(self.loc.dtype))
        return guide

    def _inverse_factor(self, h: torch.Tensor) -> torch.Tensor:
        """Lower-triangular ``L`` with ``L L^T = H^-1`` (float64): ``H = V diag(lambda) V^T``
        gives ``H^-1 = A A^T`` with ``A = V diag(lambda^-1/2)``, and the QR factorisation
        ``A^T = Q R`` gives ``A A^T = R^T R``, so ``L = R^T`` (columns signed to a positive
        diagonal)."""
        try:
            evals, evecs = torch.linalg.eigh(h.double())
        except RuntimeError as e:  # torch.linalg.LinAlgError: the eigensolver did not converge
            raise GuideError(f"the Hessian at the fitted point could not be decomposed ({e})") from e
        lowest = float(evals[0])
        if lowest <= 0:
            if self.on_indefinite == "raise":
                raise GuideError(
                    f"the Hessian of the negative log joint at the fitted point is not positive definite "
                    f"(smallest eigenvalue {lowest:.3g}): the point is not a strict local mode; fit longer, or "
                    "pass on_indefinite='jitter'"
                )
            low = int((evals < self.jitter).sum())
            warnings.warn(
                f"Laplace approximation: Hessian not positive definite (smallest eigenvalue {lowest:.3g}); "
                f"{low} eigenvalue(s) raised to {self.jitter:g}", stacklevel=3,
            )
            evals = evals.clamp_min(self.jitter)
        a = evecs * evals.rsqrt().unsqueeze(-2)
        r = torch.linalg.qr(a.mT).R
        sign = torch.where(r.diagonal() < 0, -1.0, 1.0).to(r)
        tril = r.mT * sign.unsqueeze(-2)
        if not bool((tril.diagonal() > 0).all()):
            raise GuideError("the Hessian at the fitted point is too ill-conditioned to invert in float64")
        return tril
