"""A variational autoencoder: a decoder network inside the model, an encoder ``Guide``.

The example of amortised inference with a user-written guide (Kingma & Welling 2014,
"Auto-Encoding Variational Bayes"; Rezende, Mohamed & Wierstra 2014): the local latent
``z_i`` of each image lives in the data plate, the encoder maps the image to the
parameters of ``q(z_i | x_i)``, and minibatches are scaled to the full data set by the
objective, for the encoder's log-density as for the model's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import distributions as dist
from torch import nn

from ..guides.guide import Batch, Guide
from ..program import Latent, MonadicProgram, Observed, Plate

__all__ = ["VAE", "VAEEncoder"]


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Softplus())
    return nn.Sequential(*layers)


class VAE(MonadicProgram):
    """``z_i ~ N(0, I_L)``, ``x_i ~ Bernoulli(logits = decoder(z_i))`` independently over
    the ``P`` pixels, for each image ``i`` of the plate ``data``.

    Batch field: ``x`` of shape ``(N, P)`` with entries in ``{0, 1}`` (see
    :class:`quivers.datasets.DigitsData`). The decoder is a one-hidden-layer MLP whose
    weights are model parameters (``SVIModule`` and ``SVI`` train them with the guide's).

    Parameters
    ----------
    num_pixels : int
        ``P`` (64 for scikit-learn's 8x8 digits).
    latent_dim : int
        ``L``.
    hidden_dim : int
        Width of the decoder's hidden layer.
    num_data : int, optional
        Number of images (the data plate's size; ``SVIModule`` sets it from the data module).
    """

    def __init__(self, num_pixels: int = 64, latent_dim: int = 2, hidden_dim: int = 128,
                 num_data: int | None = None) -> None:
        super().__init__()
        self.num_pixels, self.latent_dim = int(num_pixels), int(latent_dim)
        self.decoder = _mlp((latent_dim, hidden_dim, num_pixels))
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))
        data = Plate("data", size=num_data)
        self.declare(
            Latent("z", lambda: dist.Independent(dist.Normal(self.prior_loc, self.prior_scale), 1), plate=data),
            Observed("x", lambda z: dist.Independent(dist.Bernoulli(logits=self.decoder(z)), 1), plate=data),
        )

    def reconstruct(self, encoder: VAEEncoder, x: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities of the decoded encoder mean for images ``x`` ``(N, P)``."""
        with torch.no_grad():
            return torch.sigmoid(self.decoder(encoder.encode(x)[0]))


class VAEEncoder(Guide):
    """The amortised guide ``q(z_i | x_i) = N(mu(x_i), diag sigma(x_i)^2)``, an MLP of the
    image: it reads ``batch["x"]`` and has no per-image parameters, so it predicts any
    image, seen or not.

    Its :meth:`log_prob` is the plain density of the minibatch's ``z``; the objectives
    scale it by ``num_data / batch rows`` as they scale the likelihood.

    Parameters
    ----------
    model : VAE
        The model.
    hidden_dim : int
        Width of the encoder's hidden layer.
    """

    def __init__(self, model: VAE, hidden_dim: int = 128) -> None:
        super().__init__(model)
        self.net = _mlp((model.num_pixels, hidden_dim, 2 * model.latent_dim))

    @property
    def latent_names(self) -> list[str]:
        return ["z"]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of ``q(z | x)``, each ``(N, L)``."""
        loc, raw = self.net(x).chunk(2, dim=-1)
        return loc, F.softplus(raw) + 1e-4

    def _q(self, batch: Mapping[str, torch.Tensor]) -> dist.Distribution:
        return dist.Independent(dist.Normal(*self.encode(batch["x"])), 1)

    def rsample(self, batch: Batch = None, sample_shape: torch.Size | Sequence[int] = ()) -> dict[str, torch.Tensor]:
        return {"z": self._q(batch).rsample(torch.Size(sample_shape))}

    def log_prob(self, batch: Batch, sites: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self._q(batch).log_prob(sites["z"]).sum(-1)  # summed over the minibatch's images
