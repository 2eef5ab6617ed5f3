"""Data sets and ``LightningDataModule`` s yielding dict batches, all offline."""

from .base import RowDataset, TensorDataModule
from .real import (
    EIGHT_SCHOOLS_SIGMA,
    EIGHT_SCHOOLS_Y,
    BreastCancerData,
    DiabetesData,
    EightSchoolsData,
    load_breast_cancer,
    load_diabetes,
)
from .simulated import VaryingInterceptsData, simulate_varying_intercepts

__all__ = [
    "RowDataset", "TensorDataModule", "EightSchoolsData", "BreastCancerData", "DiabetesData",
    "VaryingInterceptsData", "load_breast_cancer", "load_diabetes", "simulate_varying_intercepts",
    "EIGHT_SCHOOLS_Y", "EIGHT_SCHOOLS_SIGMA",
]
