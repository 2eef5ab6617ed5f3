"""Eight schools, non-centred (Rubin 1981; Gelman et al. BDA3 5.5)."""

from __future__ import annotations

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
        self.declare(
            Latent("mu", lambda: dist.Normal(0.0, 5.0)),
            Latent("tau", lambda: dist.HalfCauchy(5.0)),
            Latent("eta", lambda: dist.Normal(0.0, 1.0), plate=schools),
            Deterministic("theta", lambda mu, tau, eta: mu + tau * eta, plate=schools),
            Observed("y", lambda theta, sigma: dist.Normal(theta, sigma), plate=schools),
        )
