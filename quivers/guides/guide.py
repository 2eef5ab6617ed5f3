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
from ..spec import Recordable

__all__ = ["Guide", "check_guide"]

Batch = Mapping[str, Any] | None
Sites = dict[str, torch.Tensor]


class Guide(Recordable, nn.Module, ABC):
    """Abstract variational distribution over a model's latent sites.

    A subclass implements :attr:`latent_names`, :meth:`rsample` and :meth:`log_prob`;
    it then works with every objective, ``SVI``, ``SVIModule``, ``Predictive`` and
    checkpoints. Build every parameter in ``__init__`` so that optimizers,
    ``state_dict`` and DDP see them at once.

    Values use the program's shape convention: ``sample_shape + batch_shape +
    event_shape`` per site, constrained (in the site's support).

    Attributes
    ----------
    has_rsample : bool
        ``True`` when :meth:`rsample` is reparameterised (differentiable in the guide's
        parameters). Objectives use the score-function (REINFORCE) estimator for guides
        that set it to ``False``.
    """

    has_rsample: bool = True

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
            The batch (guides with local latents read subsample indices from it).
        sample_shape : torch.Size
            Particle shape.

        Returns
        -------
        dict
            ``{site name: value}``, shape ``sample_shape + batch_shape + event_shape``.
        """

    @abstractmethod
    def log_prob(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Log-density ``log q(z | batch)`` of latent values, summed over sites.

        Local sites in subsampled plates are scaled by ``size / batch_length`` like the
        model's log-density.

        Returns
        -------
        torch.Tensor
            Shape ``sample_shape``.
        """

    def rsample_and_log_prob(
        self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = (),
    ) -> tuple[Sites, torch.Tensor]:
        """Draw samples and their log-density in one call (objectives call this).

        The default calls :meth:`rsample` then :meth:`log_prob`; built-in guides
        override it to reuse intermediate results.
        """
        z = self.rsample(batch, sample_shape)
        return z, self.log_prob(batch, z)

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

    @torch.no_grad()
    def sample_posterior(self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = ()) -> Sites:
        """Draw posterior samples without gradients (Pyro's/NumPyro's ``sample_posterior``).

        Returns
        -------
        dict
            ``{site name: value}``, shape ``sample_shape + batch_shape + event_shape``.
        """
        return {k: v.detach() for k, v in self.rsample(batch, sample_shape).items()}

    @torch.no_grad()
    def median(self, batch: Batch = None) -> Sites:
        """Posterior median per site.

        The default estimates it as the elementwise median of 1,000 draws; built-in
        guides override it with the exact value.
        """
        draws = self.sample_posterior(batch, (1000,))
        return {k: v.median(dim=0).values for k, v in draws.items()}

    @torch.no_grad()
    def quantiles(self, quantiles: Sequence[float] | torch.Tensor, batch: Batch = None) -> Sites:
        """Marginal posterior quantiles per site.

        The default estimates them from 1,000 draws (``torch.quantile``); built-in guides
        override it where a closed form exists.

        Parameters
        ----------
        quantiles : sequence of float
            Probabilities in ``[0, 1]``.

        Returns
        -------
        dict
            ``{site name: tensor}`` with a leading dimension of ``len(quantiles)``.

        Raises
        ------
        ValueError
            If a probability lies outside ``[0, 1]``.
        """
        q = _check_quantiles(quantiles)
        draws = self.sample_posterior(batch, (1000,))
        return {k: torch.quantile(v.to(q.dtype), q, dim=0) for k, v in draws.items()}


def _check_quantiles(quantiles: Sequence[float] | torch.Tensor) -> torch.Tensor:
    q = torch.as_tensor(quantiles, dtype=torch.get_default_dtype()).reshape(-1)
    if q.numel() == 0 or bool(((q < 0) | (q > 1)).any()):
        raise ValueError(f"quantiles must lie in [0, 1], got {q.tolist()}")
    return q


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
