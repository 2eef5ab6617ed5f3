"""``to_inference_data``: a fitted guide as ArviZ's ``InferenceData``."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ConfigError
from ..guides.guide import Guide
from ..program import MonadicProgram
from ..program.enumeration import enumerated_names
from ..program.evaluate import deterministic_values
from ..shapes import to_trace_layout
from ..validation import check_positive_int
from .discrete import infer_discrete
from .psis import _sampler, diagnose, importance_draws

if TYPE_CHECKING:
    import arviz

__all__ = ["to_inference_data", "draws_inference_data", "site_dims"]


def site_dims(model: MonadicProgram, name: str, ndim: int) -> list[str]:
    """ArviZ dimension names of site ``name`` in its site layout with ``ndim`` dims (no
    sample dims): its plates' names where it sits in a plate, ``{name}_dim_{i}`` elsewhere
    (size-1 batch dims and event dims)."""
    depth = model.site_depth(name) if name in {s.name for s in model.steps} else 0
    by_dim = {model.plate_dim(p.name): p.name for p in model.site_plates(name)} if depth else {}
    dims = []
    for i in range(ndim):
        plate = by_dim.get(i - depth) if i < depth else None
        dims.append(plate if plate is not None else f"{name}_dim_{i}")
    return dims


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64 if x.is_floating_point() else x.dtype).numpy()


@torch.no_grad()
def to_inference_data(model: MonadicProgram, guide: Guide, batch: Mapping[str, Any] | None = None,
                      num_samples: int = 1000, *, posterior_predictive: bool = True,
                      log_likelihood: bool = True) -> arviz.InferenceData:
    """ArviZ's ``InferenceData`` of a fitted guide (as ``az.from_pyro`` / ``az.from_numpyro``
    build from an MCMC run), so ``az.summary``, ``az.loo``, ``az.plot_posterior`` and the rest
    of ArviZ work on a variational fit.

    Groups:

    * ``posterior``: ``num_samples`` draws from the guide (one chain), latent and
      deterministic sites in their site shapes, plate names as dimension names; sites
      summed out by enumeration are drawn from their exact posterior given each draw
      (:func:`~quivers.infer.infer_discrete`), and such a model has no ``log_likelihood``
      group (a warning says so);
    * ``posterior_predictive``: the observed sites drawn from the model at each posterior
      draw (``posterior_predictive=True``);
    * ``observed_data``: the observed sites' values in ``batch``;
    * ``log_likelihood``: the pointwise ``log p(y_i | z)`` of every observed site at each
      draw, elementwise over its plates (``log_likelihood=True``), which ``az.loo`` and
      ``az.waic`` read;
    * ``sample_stats``: ``log_weight``, the importance weight ``log p(x, z) - log q(z)`` of
      each draw (nats), and in the attributes the PSIS ``psis_k_hat`` of these weights
      (:func:`~quivers.infer.psis_diagnostic`; Yao et al. 2018).

    Parameters
    ----------
    model : MonadicProgram
        The model.
    guide : Guide
        The fitted guide (``AutoLaplaceApproximation``: its Laplace Gaussian).
    batch : mapping, optional
        The data, every plate in full.
    num_samples : int
        Posterior draws.
    posterior_predictive, log_likelihood : bool
        Whether to build these groups.

    Returns
    -------
    arviz.InferenceData

    Raises
    ------
    ConfigError
        If ``num_samples`` is not a positive int.
    """
    import arviz as az

    num_samples = check_positive_int(num_samples, "num_samples", ConfigError)
    prepared = model.prepare(batch, subsample=False)
    ss = torch.Size((num_samples,))
    z, log_w = importance_draws(model, _sampler(guide, batch), batch, num_samples)
    z, log_likelihood = _draw_enumerated(model, prepared, z, num_samples, log_likelihood, "to_inference_data")
    groups, dims = _groups(model, prepared, z, ss, 1, log_likelihood, posterior_predictive)
    diag, _ = diagnose(log_w)
    groups["sample_stats"] = {"log_weight": _numpy(log_w)[None]}
    idata = az.from_dict(**groups, dims=dims)
    idata.sample_stats.attrs.update(psis_k_hat=diag.k_hat, psis_ess=diag.ess, psis_reading=diag.reading)
    idata.posterior.attrs["inference_library"] = "quivers"
    idata.posterior.attrs["guide"] = type(guide).__name__
    return idata


def _draw_enumerated(model: MonadicProgram, prepared: Mapping[str, torch.Tensor], z: Mapping[str, torch.Tensor],
                     n: int, log_likelihood: bool, caller: str) -> tuple[dict[str, torch.Tensor], bool]:
    """``z`` with the enumerated sites drawn from their exact posterior given each draw,
    and whether a ``log_likelihood`` group can still be built (not for such a model)."""
    summed = [k for k in enumerated_names(model) if k not in z]
    if not summed:
        return dict(z), log_likelihood
    drawn = infer_discrete(model, batch=prepared, temperature=1, num_samples=n, values=z)
    z = {**z, **{k: to_trace_layout(drawn[k], 1, model.batch_ndim, model.site_depth(k)) for k in summed}}
    if log_likelihood:
        warnings.warn(f"{caller}: no log_likelihood group; the pointwise likelihood of a model whose sites {summed} "
                      "are summed out is not computed (only conditional on their draws)", stacklevel=3)
    return z, False


def _groups(model: MonadicProgram, prepared: Mapping[str, torch.Tensor],
            z: Mapping[str, torch.Tensor], ss: torch.Size, num_chains: int, log_likelihood: bool,
            posterior_predictive: bool) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """ArviZ groups ``posterior``, ``observed_data``, ``log_likelihood`` and
    ``posterior_predictive`` of draws ``z`` (trace layout, leading ``ss = (chains *
    draws,)``), chains first."""

    def chains(x: torch.Tensor) -> np.ndarray:
        return _numpy(x).reshape((num_chains, -1) + tuple(x.shape[1:]))

    values = {**z, **deterministic_values(model, prepared, z, ss)}
    posterior = {k: model.to_site_layout(k, v, 1) for k, v in values.items()}
    dims: dict[str, list[str]] = {k: site_dims(model, k, v.dim() - 1) for k, v in posterior.items()}
    groups: dict[str, Any] = {"posterior": {k: chains(v) for k, v in posterior.items()}}
    observed = [n for n in model.observed_names if n in prepared]
    tr = model.trace(prepared, z, ss) if (log_likelihood or posterior_predictive) and observed else None
    if observed:
        # from the prepared batch: a conditioned program adds its sites' values there
        groups["observed_data"] = {n: _numpy(prepared[n]) for n in observed}
        for n in observed:
            dims[n] = site_dims(model, n, prepared[n].dim())
    if tr is not None and log_likelihood:
        groups["log_likelihood"] = {n: chains(model.to_site_layout(n, tr[n].fn.log_prob(tr[n].value), 1))
                                    for n in observed}
    if tr is not None and posterior_predictive:
        pred = model.trace(prepared, z, ss, predictive=True)
        groups["posterior_predictive"] = {n: chains(model.to_site_layout(n, pred[n].value, 1)) for n in observed}
    return groups, dims


@torch.no_grad()
def draws_inference_data(model: MonadicProgram, batch: Mapping[str, Any] | None, samples: Mapping[str, torch.Tensor],
                         num_chains: int = 1, *, posterior_predictive: bool = True,
                         log_likelihood: bool = True) -> arviz.InferenceData:
    """ArviZ ``InferenceData`` of posterior draws made elsewhere (an MCMC run): the groups
    of :func:`to_inference_data` but ``sample_stats``.

    Parameters
    ----------
    model : MonadicProgram
        The model.
    batch : mapping, optional
        The data, every plate in full.
    samples : mapping of str to tensor
        Every latent site's draws in its own layout, leading ``(num_chains * draws,)``,
        chain by chain (as :meth:`~quivers.infer.MCMC.get_samples` returns them).
    num_chains : int
        How many chains the draws hold.

    Raises
    ------
    ConfigError
        If a latent site is missing from ``samples`` or the draws do not split into
        ``num_chains`` chains.
    """
    import arviz as az

    missing = [n for n in model.latent_names if n not in samples and n not in enumerated_names(model)]
    if missing:
        raise ConfigError(f"draws_inference_data: samples lack the latent sites {missing}")
    n = next(iter(samples.values())).shape[0]
    if n % num_chains:
        raise ConfigError(f"draws_inference_data: {n} draws do not split into {num_chains} chains")
    prepared = model.prepare(batch, subsample=False)
    z = {k: to_trace_layout(v, 1, model.batch_ndim, model.site_depth(k)) for k, v in samples.items()}
    z, log_likelihood = _draw_enumerated(model, prepared, z, n, log_likelihood, "draws_inference_data")
    groups, dims = _groups(model, prepared, z, torch.Size((n,)), num_chains, log_likelihood,
                           posterior_predictive)
    idata = az.from_dict(**groups, dims=dims)
    idata.posterior.attrs["inference_library"] = "quivers"
    return idata
