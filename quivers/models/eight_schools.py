"""Eight schools, non-centred (Rubin 1981; Gelman et al. BDA3 5.5)."""

from __future__ import annotations

import torch
from torch import distributions as dist

from ..program import Deterministic, Latent, MonadicProgram, Observed, Plate

__all__ = ["EightSchools"]


class EightSchools(MonadicProgram):
    """Hierarchical model of coaching effects, non-centred parameterisation.

    ``mu ~ N(0, 5)``, ``tau ~ HalfCauchy(5)``, ``eta_j ~ N(0, 1)``,
    ``theta_j = mu + tau eta_j``, ``y_j ~ N(theta_j, sigma_j)``.

    Batch fields: ``y`` (J,) observed effects, ``sigma`` (J,) their standard errors
    (see :class:`quivers.datasets.EightSchoolsData`).

    Parameters
    ----------
    num_schools : int
        J, the size of the ``schools`` plate (8 for Rubin's data).
    """

    def __init__(self, num_schools: int = 8) -> None:
        super().__init__()
        schools = Plate("schools", size=num_schools)
        self.register_buffer("zero", torch.tensor(0.0))  # prior constants follow the model's device and dtype
        self.register_buffer("one", torch.tensor(1.0))
        self.register_buffer("five", torch.tensor(5.0))
        self.declare(
            Latent("mu", lambda: dist.Normal(self.zero, self.five)),
            Latent("tau", lambda: dist.HalfCauchy(self.five)),
            Latent("eta", lambda: dist.Normal(self.zero, self.one), plate=schools),
            Deterministic("theta", lambda mu, tau, eta: mu + tau * eta, plate=schools),
            Observed("y", lambda theta, sigma: dist.Normal(theta, sigma), plate=schools),
        )
