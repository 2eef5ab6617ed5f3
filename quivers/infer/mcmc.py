"""A reference sampler: the No-U-Turn sampler on a quivers model (``NUTS`` and ``MCMC``).

Variational fits are checked against MCMC; this module runs it on the same
``MonadicProgram``, so a user compares a guide with NUTS on one model definition. The
sampler itself is Pyro's (``pyro.infer.mcmc.NUTS`` with a ``potential_fn``, and
``pyro.infer.mcmc.MCMC``; Hoffman & Gelman 2014, "The No-U-Turn Sampler", with Stan's
windowed step-size and mass-matrix adaptation), a well-kept implementation in torch;
it comes with the ``mcmc`` extra (``pip install quivers[mcmc]``).

What quivers adds is the target and the bookkeeping: the potential energy is
``-(log p(x, T(u)) + log|det J_T(u)|)`` over the flat unconstrained vector ``u`` of
every latent site (``T`` is each site's ``biject_to(support)``, as the automatic
guides use it), with sites marked for enumeration summed out exactly; the draws come
back in each site's own layout (as ``sample_posterior`` returns them) and as ArviZ
``InferenceData`` with one chain per run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import ConfigError
from ..guides.initialization import InitFn, init_to_uniform, load_init_fn, resolve_init_fn
from ..guides.registry import LatentRegistry
from ..program import MonadicProgram
from ..validation import check_positive_int
from .enumerated import model_log_density

__all__ = ["NUTS", "MCMC"]


def _require_pyro() -> None:
    if importlib.util.find_spec("pyro") is None:
        raise ConfigError("quivers' NUTS runs Pyro's sampler, which is not installed: pip install 'quivers[mcmc]' "
                          "(or pip install pyro-ppl)")


class NUTS:
    """The No-U-Turn sampler's settings for a quivers model (Pyro's ``NUTS``, whose
    arguments these are; Hoffman & Gelman 2014).

    Parameters
    ----------
    model : MonadicProgram
        The model. Its ``Param`` values are held fixed at their current values.
    step_size : float
        Initial leapfrog step size (adapted during warm-up when ``adapt_step_size``).
    adapt_step_size, adapt_mass_matrix : bool
        Stan's dual-averaging step-size and windowed mass-matrix adaptation.
    full_mass : bool
        A dense mass matrix instead of a diagonal one.
    target_accept_prob : float
        Target acceptance probability of the step-size adaptation, in (0, 1).
    max_tree_depth : int
        Maximum depth of the trajectory tree (at most ``2**max_tree_depth`` steps).
    init_loc_fn : callable or str
        Init strategy for each chain's starting point (default
        :func:`~quivers.guides.init_to_uniform`, Stan's and Pyro's).

    Raises
    ------
    ConfigError
        If a setting is out of range, or Pyro is not installed.
    GuideError
        If the model has no latent site that the sampler can move (discrete sites must
        be marked for enumeration), as the automatic guides raise.
    """

    def __init__(self, model: MonadicProgram, step_size: float = 1.0, adapt_step_size: bool = True,
                 adapt_mass_matrix: bool = True, full_mass: bool = False, target_accept_prob: float = 0.8,
                 max_tree_depth: int = 10, init_loc_fn: InitFn | str = init_to_uniform) -> None:
        _require_pyro()
        if not (isinstance(step_size, (int, float)) and step_size > 0):
            raise ConfigError(f"NUTS: step_size must be a number > 0, got {step_size!r}")
        if not (isinstance(target_accept_prob, (int, float)) and 0 < target_accept_prob < 1):
            raise ConfigError(f"NUTS: target_accept_prob must lie in (0, 1), got {target_accept_prob!r}")
        self.max_tree_depth = check_positive_int(max_tree_depth, "NUTS: max_tree_depth", ConfigError)
        self.model = model
        self.registry = LatentRegistry(model)
        self.init_loc_fn = load_init_fn(init_loc_fn, model, "NUTS")
        self.options = {"step_size": float(step_size), "adapt_step_size": bool(adapt_step_size),
                        "adapt_mass_matrix": bool(adapt_mass_matrix), "full_mass": bool(full_mass),
                        "target_accept_prob": float(target_accept_prob), "max_tree_depth": self.max_tree_depth}

    def potential_fn(self, batch: Mapping[str, torch.Tensor]):
        """``u -> -(log p(x, T(u)) + log|det J_T(u)|)`` for a prepared (full) batch, with
        ``u`` the flat unconstrained vector (``{"u": (D,)}`` as Pyro passes it)."""
        registry, model = self.registry, self.model

        def potential(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
            values, log_det = registry.constrain(registry.unpack(params["u"]), batch, torch.Size())
            log_p = model_log_density(model, batch, values, torch.Size())[0]
            return -(log_p + sum(log_det.values()))

        return potential

    def initial_point(self) -> torch.Tensor:
        """A chain's starting point ``u`` (shape ``(D,)``) from ``init_loc_fn``."""
        return self.registry.pack(self.registry.initial_unconstrained(resolve_init_fn(self.init_loc_fn)))


class MCMC:
    """Runs :class:`NUTS` chains and returns their draws in quivers' site shapes (Pyro's
    ``MCMC``).

    Chains run one after another in this process (each a Pyro ``MCMC`` run with its own
    warm-up and starting point), so a model need not be picklable.

    Parameters
    ----------
    kernel : NUTS
        The sampler and its model.
    num_samples : int
        Draws kept per chain.
    warmup_steps : int, optional
        Adaptation steps per chain, discarded (default ``num_samples``).
    num_chains : int
        Independent chains (default 1).
    disable_progbar : bool
        Hide Pyro's progress bar (default ``True``).

    Raises
    ------
    ConfigError
        If a count is not a positive int (``warmup_steps`` may be 0).

    Examples
    --------
    >>> mcmc = MCMC(NUTS(model), num_samples=500, warmup_steps=500)  # doctest: +SKIP
    >>> mcmc.run(batch)  # doctest: +SKIP
    >>> mcmc.get_samples()["tau"].shape  # doctest: +SKIP
    torch.Size([500])
    """

    def __init__(self, kernel: NUTS, num_samples: int, warmup_steps: int | None = None, num_chains: int = 1,
                 disable_progbar: bool = True) -> None:
        if not isinstance(kernel, NUTS):
            raise ConfigError(f"MCMC: kernel must be quivers.infer.NUTS, got {type(kernel).__name__}")
        self.kernel = kernel
        self.num_samples = check_positive_int(num_samples, "MCMC: num_samples", ConfigError)
        warm = self.num_samples if warmup_steps is None else warmup_steps
        if isinstance(warm, bool) or not isinstance(warm, int) or warm < 0:
            raise ConfigError(f"MCMC: warmup_steps must be an int >= 0, got {warmup_steps!r}")
        self.warmup_steps = warm
        self.num_chains = check_positive_int(num_chains, "MCMC: num_chains", ConfigError)
        self.disable_progbar = bool(disable_progbar)
        self._flat: torch.Tensor | None = None  # (chains, draws, D)
        self._divergences: list[list[int]] = []  # per chain: the divergent draws' indices
        self._batch: Any = None

    def run(self, batch: Mapping[str, Any] | None = None) -> MCMC:
        """Sample. The batch is used whole (subsampled plates in full).

        Returns
        -------
        MCMC
            ``self``.

        Raises
        ------
        BatchError
            As :meth:`MonadicProgram.prepare`.
        """
        from pyro.infer.mcmc import MCMC as PyroMCMC
        from pyro.infer.mcmc import NUTS as PyroNUTS

        model = self.kernel.model
        prepared = model.prepare(batch, subsample=False)
        potential = self.kernel.potential_fn(prepared)
        chains, divergences = [], []
        for _ in range(self.num_chains):
            init = self.kernel.initial_point()
            nuts = PyroNUTS(potential_fn=potential, **self.kernel.options)
            run = PyroMCMC(nuts, num_samples=self.num_samples, warmup_steps=self.warmup_steps,
                           initial_params={"u": init}, disable_progbar=self.disable_progbar)
            run.run()
            chains.append(run.get_samples()["u"].detach())
            divergences.append(sorted(int(i) for i in run.diagnostics().get("divergences", {}).get("chain 0", [])))
        self._flat = torch.stack(chains)
        self._divergences = divergences
        self._batch = batch
        return self

    @property
    def num_divergences(self) -> list[int]:
        """How many kept draws ended a divergent trajectory, per chain."""
        self._check_run()
        return [len(d) for d in self._divergences]

    def _check_run(self) -> None:
        if self._flat is None:
            raise ConfigError("MCMC: call run(batch) first")

    def get_samples(self, group_by_chain: bool = False) -> dict[str, torch.Tensor]:
        """The latent sites' draws, each in the site's own layout with leading
        ``(num_chains * num_samples,)``, or ``(num_chains, num_samples)`` when
        ``group_by_chain``. Deterministic sites follow from
        ``Predictive(model, posterior_samples=mcmc.get_samples())``.

        Raises
        ------
        ConfigError
            Before :meth:`run`.
        """
        self._check_run()
        c, n, d = self._flat.shape
        model, registry = self.kernel.model, self.kernel.registry
        prepared = model.prepare(self._batch, subsample=False)
        with torch.no_grad():
            flat = self._flat.reshape(c * n, d)
            values, _ = registry.constrain(registry.unpack(flat), prepared, torch.Size((c * n,)))
        out = {k: model.to_site_layout(k, v, 1) for k, v in values.items()}
        if group_by_chain:
            out = {k: v.reshape((c, n) + v.shape[1:]) for k, v in out.items()}
        return out

    def to_inference_data(self, log_likelihood: bool = True) -> Any:
        """ArviZ ``InferenceData``: ``posterior`` (latent and deterministic sites, chain x
        draw, plate names as dims), ``posterior_predictive``, ``observed_data``,
        ``log_likelihood`` (pointwise, as ``az.loo`` reads it) and
        ``sample_stats.diverging`` (chain x draw), so ``az.summary`` gives R-hat and ESS.

        Raises
        ------
        ConfigError
            Before :meth:`run`.
        """
        import numpy as np

        from .inference_data import draws_inference_data

        idata = draws_inference_data(self.kernel.model, self._batch, self.get_samples(), self.num_chains,
                                     log_likelihood=log_likelihood)
        diverging = np.zeros((self.num_chains, self.num_samples), dtype=bool)
        for c, idx in enumerate(self._divergences):
            diverging[c, idx] = True
        idata.add_groups(sample_stats={"diverging": diverging})
        idata.posterior.attrs["sampler"] = "NUTS (pyro.infer.mcmc)"
        return idata
