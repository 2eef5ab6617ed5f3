"""``AutoLaplaceApproximation``: a MAP point, then a Gaussian from the Hessian there."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.distributions import Distribution

from ..errors import GuideError
from ..program import MonadicProgram
from .continuous import AutoContinuous
from .gaussian import AutoMultivariateNormal
from .guide import Batch, Sites
from .initialization import InitFn, init_to_median

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
        When the Hessian is not positive definite (``u`` is not a strict local mode):
        raise a :class:`~quivers.errors.GuideError` (default), or shift its eigenvalues
        up to ``jitter`` with a ``UserWarning``.
    jitter : float
        Smallest eigenvalue after the shift (``on_indefinite="jitter"``).

    Notes
    -----
    :meth:`rsample`, :meth:`sample_posterior` and :meth:`median` give the point (as the
    anchors' do); :meth:`get_posterior` and :meth:`quantiles` give the Laplace Gaussian,
    which needs the data: pass the batch.
    """

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

    def rsample_and_log_prob(
        self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = (),
    ) -> tuple[Sites, torch.Tensor]:
        self._prepare(batch)
        ss = torch.Size(sample_shape)
        values, ladj = self._constrain(self.loc.expand(ss + self.loc.shape), ss)
        return values, -ladj

    def log_prob(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> torch.Tensor:
        u = self.unconstrained(sites)
        return -self._constrain(u, u.shape[:-1])[1]

    def _unconstrained_median(self) -> torch.Tensor:
        """The fitted point."""
        return self.loc

    def get_posterior(self, batch: Batch = None) -> Distribution:
        """The Laplace Gaussian over the flat unconstrained vector (needs the batch)."""
        return self.laplace_approximation(batch).get_posterior()

    @torch.no_grad()
    def quantiles(self, quantiles: Sequence[float] | torch.Tensor, batch: Batch = None) -> Sites:
        """Marginal quantiles of the Laplace Gaussian (needs the batch)."""
        return self.laplace_approximation(batch).quantiles(quantiles)

    def _potential(self, batch: Batch) -> Callable[[torch.Tensor], torch.Tensor]:
        """``u -> -(log p(data, T(u)) + log|det J_T(u)|)`` on the full batch (no subsampling)."""
        prepared = self.model.prepare(batch, subsample=False)

        def neg_log_density(u: torch.Tensor) -> torch.Tensor:
            values, ladj = self._constrain(u, torch.Size())
            return -(self.model.trace(prepared, values).log_joint() + ladj)

        return neg_log_density

    def hessian(self, batch: Batch = None) -> torch.Tensor:
        """Hessian of the negative unconstrained log joint at ``loc``, shape ``(D, D)``."""
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
        u = start.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([u], max_iter=int(max_iter), tolerance_grad=tolerance_grad,
                                tolerance_change=1e-12, history_size=50, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = potential(u)
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            final = float(potential(u))
        if not (math.isfinite(final) and bool(torch.isfinite(u).all())):
            raise GuideError(f"fit_map: L-BFGS reached a non-finite point (log joint {-final}); loc left unchanged")
        with torch.no_grad():
            self.loc.copy_(u)
        return final

    @torch.no_grad()
    def _set_moments(self, loc: torch.Tensor, cov: torch.Tensor) -> None:
        """Warm-start hook: the point is ``loc``; a point has no covariance."""
        self.loc.copy_(loc)

    def laplace_approximation(self, batch: Batch = None) -> AutoMultivariateNormal:
        """An :class:`AutoMultivariateNormal` at ``loc`` with covariance ``H^-1``.

        Returns
        -------
        AutoMultivariateNormal
            A new guide over the same sites (its ``loc`` and ``scale_tril`` set).

        Raises
        ------
        GuideError
            If the Hessian is not finite, or not positive definite and
            ``on_indefinite="raise"``.
        """
        h = self.hessian(batch).detach()
        if not bool(torch.isfinite(h).all()):
            raise GuideError("the Hessian of the negative log joint at the fitted point is not finite")
        chol, info = torch.linalg.cholesky_ex(h)
        if int(info) != 0:
            lowest = float(torch.linalg.eigvalsh(h)[0])
            if self.on_indefinite == "raise":
                raise GuideError(
                    f"the Hessian of the negative log joint at the fitted point is not positive definite "
                    f"(smallest eigenvalue {lowest:.3g}): the point is not a local mode; fit longer, or "
                    "pass on_indefinite='jitter'"
                )
            warnings.warn(
                f"Laplace approximation: Hessian not positive definite (smallest eigenvalue {lowest:.3g}); "
                f"eigenvalues shifted up to {self.jitter:g}", stacklevel=2,
            )
            h = h + (self.jitter - lowest) * torch.eye(h.shape[-1], dtype=h.dtype)
            chol = torch.linalg.cholesky(h)
        cov = torch.cholesky_inverse(chol)
        guide = AutoMultivariateNormal(self.model, self.observed_names, init_loc_fn=self.init_loc_fn)
        guide.to(dtype=self.loc.dtype, device=self.loc.device)
        with torch.no_grad():
            guide.loc.copy_(self.loc)
            guide.set_scale_tril(torch.linalg.cholesky(cov))
        return guide
