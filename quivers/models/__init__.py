"""Example models used by the configs, docs and benchmarks."""

from .changepoint import ChangePoint
from .eight_schools import EightSchools
from .hierarchical import VaryingIntercepts
from .hmm import GaussianHMM
from .mixture import GaussianMixture
from .regression import BayesianLinearRegression, BayesianLogisticRegression
from .vae import VAE, VAEEncoder

__all__ = ["EightSchools", "BayesianLogisticRegression", "BayesianLinearRegression", "VaryingIntercepts", "VAE",
           "VAEEncoder", "GaussianMixture", "GaussianHMM", "ChangePoint"]
