"""Uncorrected Hamiltonian annealing: the sampler inside the DAIS guides.

:class:`HamiltonianAnnealing` moves a draw ``z_0`` of a base density ``q_0`` along the
geometric path ``pi_beta ∝ q_0^(1 - beta) p^beta`` with ``K`` leapfrog steps and partial
momentum refreshment, without Metropolis corrections, so that the final state ``z_K`` is
a differentiable function of the guide's parameters (Geffner & Domke 2021, "MCMC
variational inference via uncorrected Hamiltonian annealing"; Zhang et al. 2021,
"Differentiable annealed importance sampling and the perils of gradient noise").

**The extended-space density.** With momenta ``v ~ N(0, M)`` (``M`` diagonal), each step
``k = 1..K`` applies a volume-preserving leapfrog map ``(z, v) -> (z_k, v̂_k)`` at
``beta_k`` and then refreshes ``v_k = gamma v̂_k + sqrt(1 - gamma^2) M^(1/2) xi``, a kernel
reversible with respect to ``N(0, M)``. Taking the inverse leapfrog and the same refresh
as the backward kernels, the importance weight of the whole path telescopes to::

    log w = log p(z_K) - log q_0(z_0) - sum_k [log N(v_{k-1}; 0, M) - log N(v̂_k; 0, M)]

so the guide's "log-density" on the extended space is
``log q_0(z_0) + sum_k [log N(v_{k-1}) - log N(v̂_k)]``, and ``E[w] = ∫ p``: the ELBO on
the extended space is a lower bound of the log evidence, tight as ``K`` grows and the
path is followed closely. The last refresh does not enter the weight and is not drawn.

Learned quantities (NumPyro's ``AutoDAIS`` knobs): the step size
``eta_k = eta_max * sigmoid(a + c * beta_k)``, in ``(0, eta_max)`` and varying along the
path (NumPyro's is ``clip(eta_0 + c * beta_k, 0, eta_max)``: there a first Adam step of
``c``, which moves it by the learning rate whatever the gradient, exceeds the initial
step of 0.01 at learning rates of 0.01 and more, and the clip then holds every step at 0
with a zero gradient; in the logit the same step is a relative change), the damping
``gamma`` in ``(0, 1)``, the schedule ``beta_k = cumsum(b)_k / sum(b)`` (``b > 0``,
``beta_K = 1``) and the diagonal mass ``M``. A step moves ``z`` by about ``eta`` times
``M^(-1/2)``: with ``z`` in the posterior's whitened coordinates and ``M = 1`` (what
``AutoDAIS`` does after a warm start) ``eta`` is in posterior standard deviations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution

from ..errors import GuideError, NonFiniteLossError
from ..validation import check_positive_int, is_validation_enabled, validation_enabled
from .transforms import inv_softplus

__all__ = ["HamiltonianAnnealing"]

LogDensity = Callable[[torch.Tensor], torch.Tensor]


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


class HamiltonianAnnealing(nn.Module):
    """``K`` steps of uncorrected Hamiltonian annealing with learned step size, damping,
    schedule and diagonal mass (the sampler of :class:`~quivers.guides.AutoDAIS`).

    Parameters
    ----------
    K : int
        Number of annealing (leapfrog) steps, at least 1.
    dim : int
        Length of the state vector ``z`` (its last dimension).
    eta_init : float
        Initial step size, in ``(0, eta_max)``.
    eta_max : float
        Largest step size, positive.
    gamma_init : float
        Initial momentum damping, in ``(0, 1)``.
    learn_mass : bool
        Learn the diagonal mass with the other quantities (NumPyro does), or keep it fixed
        at what :meth:`set_mass` sets (default ``False``: 1). Fixed by default because a learned mass can shrink
        until the leapfrog is unstable in a stiff direction: fitting eight schools with
        ``SVI.run``, a learned mass blew the ELBO up by 8 nats after 1,000 steps, which
        the rest of the fit did not recover.
    num_elements : int, optional
        With it, every quantity is learned separately for each of ``num_elements``
        independent elements (the rows of a plate), and :meth:`forward` takes the rows'
        ``index``; without it (default) they are shared.
    dtype : torch.dtype, optional
        Dtype of the parameters (default: torch's default).

    Raises
    ------
    GuideError
        If ``K`` is not a positive integer, ``eta_max <= 0``, ``eta_init`` is not in
        ``(0, eta_max)`` or ``gamma_init`` not in ``(0, 1)``.
    """

    def __init__(self, K: int, dim: int, eta_init: float = 0.01, eta_max: float = 0.1, gamma_init: float = 0.9,
                 learn_mass: bool = False, num_elements: int | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.K = check_positive_int(K, "K", GuideError)
        if not (isinstance(eta_max, (int, float)) and math.isfinite(eta_max) and eta_max > 0):
            raise GuideError(f"eta_max must be a finite number > 0, got {eta_max!r}")
        if not (isinstance(eta_init, (int, float)) and 0 < eta_init < eta_max):
            raise GuideError(f"eta_init must satisfy 0 < eta_init < eta_max = {eta_max}, got {eta_init!r}")
        if not (isinstance(gamma_init, (int, float)) and 0 < gamma_init < 1):
            raise GuideError(f"gamma_init must be in the open interval (0, 1), got {gamma_init!r}")
        self.eta_max = float(eta_max)
        lead = () if num_elements is None else (int(num_elements),)
        self.per_element = num_elements is not None
        kw = {"dtype": dtype or torch.get_default_dtype()}
        self.eta_raw = nn.Parameter(torch.full(lead, _logit(eta_init / eta_max), **kw))
        self.eta_coeff = nn.Parameter(torch.zeros(lead, **kw))
        self.gamma_raw = nn.Parameter(torch.full(lead, _logit(gamma_init), **kw))
        one = float(inv_softplus(1.0))
        self.beta_raw = nn.Parameter(torch.full(lead + (self.K,), one, **kw))
        mass = torch.full(lead + (int(dim),), one, **kw)
        self.learn_mass = bool(learn_mass)
        if self.learn_mass:
            self.mass_raw = nn.Parameter(mass)
        else:
            self.register_buffer("mass_raw", mass)

    # ------------------------------------------------------------------ the learned quantities
    def _select(self, p: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        return p if index is None or not self.per_element else p.index_select(0, index.to(p.device))

    def betas(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """The schedule ``beta_1 < ... < beta_K = 1``, shape ``(K,)`` (``(rows, K)`` per element)."""
        b = F.softplus(self._select(self.beta_raw, index)).cumsum(-1)
        return b / b[..., -1:]

    def step_sizes(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """``eta_k``, shape ``(K,)`` (``(rows, K)`` per element)."""
        a = self._select(self.eta_raw, index).unsqueeze(-1)
        c = self._select(self.eta_coeff, index).unsqueeze(-1)
        return self.eta_max * torch.sigmoid(a + c * self.betas(index))

    def gamma(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """The damping, shape ``()`` (``(rows,)`` per element)."""
        return torch.sigmoid(self._select(self.gamma_raw, index))

    def mass(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """The diagonal mass, shape ``(dim,)`` (``(rows, dim)`` per element)."""
        return F.softplus(self._select(self.mass_raw, index))

    @torch.no_grad()
    def set_mass(self, mass: torch.Tensor) -> None:
        """Set the diagonal mass (positive, broadcastable to the parameter's shape)."""
        self.mass_raw.copy_(inv_softplus(mass.to(self.mass_raw).expand_as(self.mass_raw)))

    # ------------------------------------------------------------------ the sampler
    def forward(self, z0: torch.Tensor, log_base: LogDensity, log_target: LogDensity,
                index: torch.Tensor | None = None, rows: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Anneal ``z0`` from ``log_base`` to ``log_target``.

        Parameters
        ----------
        z0 : Tensor
            Draws of the base, shape ``sample_shape + (dim,)``, or ``sample_shape + (rows,
            dim)`` (see ``rows``).
        log_base, log_target : callable
            Map a state of ``z0``'s shape to its log-density (any shape: only the
            gradient of the sum is used, taken with autograd, with ``create_graph`` when
            gradients are enabled, so the result is differentiable in the guide's and the
            model's parameters). Per element, each row's density must depend on that row
            alone (the rows anneal independently, each at its own ``beta``).
        index : Tensor, optional
            The rows' indices into ``num_elements`` (per-element quantities only).
        rows : bool, optional
            Whether ``z0`` has a rows dimension before ``dim`` (default: with per-element
            quantities); shared quantities may anneal rows too.

        Returns
        -------
        z : Tensor
            The final state ``z_K``, shape of ``z0``.
        log_factor : Tensor
            ``sum_k [log N(v_{k-1}; 0, M) - log N(v̂_k; 0, M)]``, shape ``sample_shape``: add it
            to ``log q_0(z_0)`` for the extended-space log-density (module docstring).

        Raises
        ------
        NonFiniteLossError
            With validation on (:func:`quivers.enable_validation`), if the chain reached
            non-finite values (an unstable leapfrog); the densities inside the chain are
            evaluated without argument checks, so this one check names the cause.
        """
        rows = self.per_element if rows is None else rows
        ss_ndim = z0.dim() - (2 if rows else 1)
        mass = self.mass(index)
        inv_mass = 1.0 / mass
        etas = self.step_sizes(index)
        betas = self.betas(index)
        gamma = self.gamma(index)
        refresh = (1.0 - gamma.square()).sqrt()
        if self.per_element:  # (rows,) -> (rows, 1) against z's (..., rows, dim)
            gamma, refresh = gamma.unsqueeze(-1), refresh.unsqueeze(-1)
        z = z0
        v = mass.sqrt() * torch.randn_like(z0)
        log_factor = z0.new_zeros(z0.shape[:ss_ndim])
        check = is_validation_enabled()
        with _unvalidated():  # the chain's inner states are checked once, at the end
            for k in range(self.K):
                eta = etas[..., k:k + 1]
                beta = betas[..., k:k + 1]
                z_half = z + 0.5 * eta * inv_mass * v
                v_hat = v + eta * ((1.0 - beta) * _grad(log_base, z_half) + beta * _grad(log_target, z_half))
                z = z_half + 0.5 * eta * inv_mass * v_hat
                kinetic = 0.5 * (v.square() - v_hat.square()) * inv_mass  # log N(v) - log N(v̂), per coordinate
                log_factor = log_factor - kinetic.flatten(ss_ndim).sum(-1)
                if k + 1 < self.K:
                    v = gamma * v_hat + refresh * mass.sqrt() * torch.randn_like(v_hat)
        if check and not bool(torch.isfinite(z).all() and torch.isfinite(log_factor).all()):
            raise NonFiniteLossError(
                "DAIS: the annealing reached non-finite positions (the leapfrog is unstable at this step size for "
                "the posterior's curvature); warm-start the guide (SVI.run does), lower eta_max, or fit in float64")
        return z, log_factor


@contextmanager
def _unvalidated() -> Iterator[None]:
    """torch's argument checks and quivers' value checks off: inside the chain a diverged
    state must reach the end, where one check names the cause, not fail in a density."""
    saved = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        with validation_enabled(False):
            yield
    finally:
        Distribution.set_default_validate_args(saved)


def _grad(fn: LogDensity, z: torch.Tensor) -> torch.Tensor:
    """``d/dz sum(fn(z))``: a graph for the guide's gradients when gradients are enabled,
    a plain value otherwise (``sample_posterior`` runs under ``no_grad``)."""
    create = torch.is_grad_enabled()
    with torch.enable_grad():
        x = z if z.requires_grad else z.detach().requires_grad_()
        (g,) = torch.autograd.grad(fn(x).sum(), x, create_graph=create, allow_unused=True)
    return torch.zeros_like(z) if g is None else g
