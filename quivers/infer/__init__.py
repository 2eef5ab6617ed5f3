"""Objectives, the ``SVI`` loop and ``Predictive``."""

from .elbo import ELBO, Trace_ELBO
from .predictive import Predictive
from .svi import SVI

__all__ = ["ELBO", "Trace_ELBO", "SVI", "Predictive"]
