"""Objectives, the ``SVI`` loop and ``Predictive``."""

from .compiled import CompiledObjective
from .elbo import ELBO, Trace_ELBO, TraceMeanField_ELBO
from .predictive import Predictive
from .svi import SVI

__all__ = ["ELBO", "Trace_ELBO", "TraceMeanField_ELBO", "SVI", "Predictive", "CompiledObjective"]
