"""``NeuTraReparam``: run a sampler in the coordinates of a trained guide (Hoffman, Sountsov,
Dillon, Langmore, Tran & Vasudevan 2019, "NeuTra-lizing Bad Geometry in Hamiltonian Monte
Carlo Using Neural Transport"; Pyro's and NumPyro's ``NeuTraReparam``).

A guide ``q`` that is a transform ``T`` of a standard Normal base (``AutoMultivariateNormal``,
``AutoIAFNormal``, ``AutoBNAFNormal``, ``AutoNormalizingFlow``, ``AutoDiagonalNormal``)
maps ``w ~ N(0, I)`` to the latent sites ``z = T(w)``. The posterior pulled back through
``T``, ``p(x, T(w)) |det dT/dw|``, is close to ``N(0, I)`` where ``q`` is close to the
posterior, so NUTS on ``w`` takes long steps where the original geometry (a funnel, strong
correlations) forced short ones, and its draws pushed through ``T`` are exact draws of the
posterior (the sampler corrects whatever ``q`` missed).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ModelSpecError
from ..guides.continuous import AutoContinuous
from ..guides.transforms import call_and_log_det
from ..program import Deterministic, Factor, Latent
from ..program.reparam import JointReparam, step_fn
from ..program.steps import Param, Step

__all__ = ["NeuTraReparam"]


class NeuTraReparam(JointReparam):
    """The program in the coordinates ``w`` of a trained flow or Gaussian guide.

    ``model.reparam(NeuTraReparam(guide))`` has one latent site, ``shared_latent``
    (``w ~ N(0, I_D)``, the guide's base); each latent site the guide covers becomes the
    deterministic site ``T(w)[site]`` plus a factor ``<site>_prior`` with its prior
    log-density there, and the factor ``neutra_log_det`` adds
    ``log|det dT/dw| - log N(w; 0, I)``, so the program's log density is
    ``log p(x, T(w)) + log|det dT/dw|``. Run :class:`~quivers.infer.NUTS` on it and map
    its draws back with :meth:`transform_samples`.

    The guide's parameters are held as they are (trained); gradients flow to ``w`` only.

    Parameters
    ----------
    guide : AutoContinuous
        A trained guide whose posterior is a transform of its base
        (``get_transform``), over global sites (``batch_ndim=0``), without supports that
        depend on other sites.

    Raises
    ------
    ModelSpecError
        If the guide is not such a guide, or (when applied) was built for another model.
    """

    latent_name = "shared_latent"

    def __init__(self, guide: AutoContinuous) -> None:
        if not isinstance(guide, AutoContinuous) or guide.batch_ndim:
            raise ModelSpecError(f"NeuTraReparam needs an AutoContinuous guide over one block (batch_ndim=0), got "
                                 f"{type(guide).__name__}")
        try:
            guide.get_transform()
        except NotImplementedError as e:
            raise ModelSpecError(f"NeuTraReparam: {type(guide).__name__} is not a transform of a Normal base "
                                 "(AutoMultivariateNormal, AutoIAFNormal, AutoBNAFNormal or AutoNormalizingFlow are)"
                                 ) from e
        if guide.registry.has_dynamic:
            raise ModelSpecError("NeuTraReparam: the guide has sites whose support depends on other sites")
        self.guide = guide
        self._cache: tuple[Any, dict[str, torch.Tensor], torch.Tensor] | None = None

    # ------------------------------------------------------------------ the transform
    def _push(self, w: torch.Tensor, trace_layout: bool = True) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``z = T(w)`` (trace layout, per site) and ``log|det dT/dw| - log N(w; 0, I)``
        (shape ``sample_shape``) for ``w`` in trace layout (as the program's steps see it)
        or with shape ``sample_shape + (D,)``; the last result is reused while ``w`` is the
        same tensor."""
        if self._cache is not None and self._cache[0] is w:
            return self._cache[1], self._cache[2]
        guide = self.guide
        key = w
        if trace_layout:  # sample_shape + (1,) * batch_ndim + (D,): drop the plates' padding
            nb = guide.model.batch_ndim
            w = w.reshape(w.shape[: w.dim() - 1 - nb] + w.shape[-1:])
        base = guide.get_base_dist()
        u, log_det_flow = call_and_log_det(guide.get_transform(), w)
        ss = w.shape[:-1]
        values, log_det = guide.registry.constrain(guide.registry.unpack(u), {}, ss)
        extra = log_det_flow + sum(log_det.values()) - base.log_prob(w)
        self._cache = (key, values, extra)
        return values, extra

    def transform_samples(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """Draws of ``shared_latent`` (``sample_shape + (D,)``) mapped to the guide's sites,
        each in its own layout with leading ``sample_shape`` (as ``sample_posterior``
        returns them); differentiable in ``w`` when ``w`` requires grad."""
        with torch.set_grad_enabled(w.requires_grad):  # plain draws in, plain values out
            values, _ = self._push(w, trace_layout=False)
        self._cache = None
        model, n = self.guide.model, w.dim() - 1
        return {k: model.to_site_layout(k, v, n) for k, v in values.items()}

    # ------------------------------------------------------------------ the rewrite
    def rewrite(self, program: Any, steps: list[Step | Param]) -> list[Step | Param]:
        if self.guide.model is not program and getattr(self.guide.model, "root", None) is not program:
            raise ModelSpecError(f"NeuTraReparam: the guide was built for another {type(self.guide.model).__name__} "
                                 "instance than this program")
        covered = set(self.guide.latent_names)
        taken = [s.name for s in steps if s.name == self.latent_name or s.name == "neutra_log_det"]
        if taken:
            raise ModelSpecError(f"NeuTraReparam: the program already has a site named {taken[0]!r}")
        name = self.latent_name
        out: list[Step | Param] = [Latent(name, step_fn(self.guide.get_base_dist, (), {}))]
        for s in steps:
            if s.name not in covered:
                out.append(s)
                continue
            out.append(Deterministic(s.name, step_fn(self._site_value(s.name), (name,), {}), plate=s.plates))
            out.append(Factor(f"{s.name}_prior", step_fn(_prior(s), (s.name, *s.deps), s.defaults), plate=s.plates))
        out.append(Factor("neutra_log_det", step_fn(lambda **kw: self._push(kw[name])[1], (name,), {})))
        return out

    def _site_value(self, site: str):
        def value(**kw: Any) -> torch.Tensor:
            return self._push(kw[self.latent_name])[0][site]
        return value


def _prior(step: Step):
    """``(value, deps) -> log p(value | deps)`` of a latent step (event dims summed)."""
    fn, name = step.fn, step.name

    def log_density(**kw: Any) -> torch.Tensor:
        value = kw.pop(name)
        return fn(**kw).log_prob(value)

    return log_density

