"""The MAP search behind the warm start: damped Newton with the exact Hessian for small
latent dimensions, L-BFGS with a strong-Wolfe line search above."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["MapSearch", "newton_search", "lbfgs_search", "newton_decrement"]

Potential = Callable[[torch.Tensor], torch.Tensor]

# the search has converged when the Newton step to the mode is below this many posterior sds
# (the Newton decrement sqrt(g^T H^-1 g), affine invariant: a badly scaled posterior converges
# on the same terms as a well scaled one)
CONVERGED_SD = 1e-3


@dataclass
class MapSearch:
    """What one search did.

    Attributes
    ----------
    point : Tensor
        The final point, shape ``(D,)``.
    value : float
        The potential (negative unconstrained log joint, nats) there.
    iterations : int
        Newton iterations, or L-BFGS function evaluations.
    converged : bool
        Whether the Newton decrement at ``point`` is below ``1e-3`` posterior sds.
    method : str
        ``"newton"`` or ``"lbfgs"``.
    gradient : Tensor
        The potential's gradient at ``point``, shape ``(D,)``.
    hessian : Tensor or None
        Its Hessian at ``point``, shape ``(D, D)``, where the search computed it (Newton).
    """

    point: torch.Tensor
    value: float
    iterations: int
    converged: bool
    method: str
    gradient: torch.Tensor
    hessian: torch.Tensor | None = None


def _grad(potential: Potential, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        x = u.detach().requires_grad_(True)
        f = potential(x)
        (g,) = torch.autograd.grad(f, x)
    return f.detach(), g.detach()


def hessian(potential: Potential, u: torch.Tensor) -> torch.Tensor:
    """The symmetrised autograd Hessian of ``potential`` at ``u``, shape ``(D, D)``."""
    with torch.enable_grad():
        h = torch.autograd.functional.hessian(potential, u.detach())
    return 0.5 * (h + h.mT)


def newton_decrement(g: torch.Tensor, h: torch.Tensor) -> float:
    """``sqrt(g^T H^-1 g)``: the length of the Newton step in the metric of ``H`` (posterior
    sds when ``H`` is the posterior precision); ``inf`` when ``H`` is not positive definite."""
    evals, evecs = torch.linalg.eigh(h)
    if not bool(evals[0] > 0):
        return math.inf
    gv = evecs.mT @ g
    return float((gv.square() / evals).sum().sqrt())


def newton_search(potential: Potential, start: torch.Tensor, max_iter: int = 100) -> MapSearch:
    """Minimise ``potential`` by saddle-free damped Newton steps (Dauphin et al. 2014;
    Levenberg 1944, Marquardt 1963): with ``H = V diag(lambda) V^T`` the step is
    ``-V diag(1 / (|lambda| + mu)) V^T g``, and along the most negative curvature direction
    at least ``(|lambda_min| + mu)^-1/2`` downhill (so an exact saddle, where ``g`` is
    zero, is left too); ``mu`` grows tenfold until the step lowers the potential and
    shrinks tenfold after each accepted step. Near a strict mode this is Newton's method
    (quadratic convergence); away from one it descends along negative curvature instead of
    stepping to a saddle. Stops when the Newton decrement is below
    ``1e-3`` posterior sds, or no damping lowers the potential, or after ``max_iter``.

    Parameters
    ----------
    potential : callable
        ``u -> scalar``, differentiable twice by autograd.
    start : Tensor
        Starting point, shape ``(D,)``; the dtype of the search.
    max_iter : int
        Largest number of Newton iterations.
    """
    u = start.detach().clone()
    f, g = _grad(potential, u)
    mu = 0.0
    it = 0
    converged = False
    for _ in range(int(max_iter)):
        it += 1
        h = hessian(potential, u)
        if not bool(torch.isfinite(h).all()):
            break
        evals, evecs = torch.linalg.eigh(h)
        gv = evecs.mT @ g
        if bool(evals[0] > 0) and float((gv.square() / evals).sum().sqrt()) < CONVERGED_SD:
            converged = True
            break
        floor = 1e-12 * float(evals.abs().max().clamp_min(1.0))
        accepted = False
        for _ in range(60):
            comp = gv / (evals.abs() + mu + floor)
            if bool(evals[0] < 0):  # negative curvature: move along it by at least its length scale
                escape = float(evals[0].abs() + mu) ** -0.5
                sign = 1.0 if float(gv[0]) >= 0 else -1.0  # downhill (either way at an exact saddle)
                comp[0] = sign * max(abs(float(comp[0])), escape)
            step = -(evecs @ comp)
            f_new = potential(u + step).detach()
            if bool(torch.isfinite(f_new)) and float(f_new) <= float(f):
                accepted = True
                break
            mu = max(10.0 * mu, floor * 1e6, 1e-10)
        if not accepted:
            break
        u = u + step
        f, g = _grad(potential, u)
        mu = mu / 10.0 if mu > 1e-10 else 0.0
    else:
        h = hessian(potential, u)
        converged = newton_decrement(g, h) < CONVERGED_SD
    return MapSearch(u, float(f), it, converged, "newton", g, h)


def lbfgs_search(potential: Potential, start: torch.Tensor, max_iter: int = 1000,
                 tolerance_grad: float = 1e-9) -> MapSearch:
    """Minimise ``potential`` by L-BFGS with a strong-Wolfe line search (Nocedal & Wright
    2006, alg. 7.5 and 3.5; ``torch.optim.LBFGS``). Convergence is judged afterwards by
    the Newton decrement with the exact Hessian (:func:`newton_decrement`), when the
    caller computes it; here only the gradient's largest entry is known, so ``converged``
    means ``max|g| < 1e-6 max(1, |f|)``.

    Parameters
    ----------
    potential : callable
        ``u -> scalar``.
    start : Tensor
        Starting point, shape ``(D,)``.
    max_iter : int
        Largest number of L-BFGS iterations.
    tolerance_grad : float
        L-BFGS stops when the largest gradient entry is below this.
    """
    u = start.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([u], max_iter=int(max_iter), max_eval=int(max_iter) * 2, tolerance_grad=tolerance_grad,
                            tolerance_change=1e-14, history_size=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = potential(u)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    point = u.detach()
    f, g = _grad(potential, point)
    evals = int(opt.state[opt._params[0]].get("func_evals", 0))
    converged = bool(torch.isfinite(f)) and float(g.abs().max()) < 1e-6 * max(1.0, abs(float(f)))
    return MapSearch(point, float(f), evals, converged, "lbfgs", g)
