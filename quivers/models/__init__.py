"""Example models used by the configs, docs and benchmarks."""

from .eight_schools import EightSchools
from .hierarchical import VaryingIntercepts
from .regression import BayesianLinearRegression, BayesianLogisticRegression

__all__ = ["EightSchools", "BayesianLogisticRegression", "BayesianLinearRegression", "VaryingIntercepts"]
