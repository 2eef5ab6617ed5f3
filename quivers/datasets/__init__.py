"""Data sets and ``LightningDataModule`` s yielding dict batches, all offline."""

from .base import RowDataset, TensorDataModule
from .real import (
    EIGHT_SCHOOLS_SIGMA,
    EIGHT_SCHOOLS_Y,
    BreastCancerData,
    DiabetesData,
    DigitsData,
    EightSchoolsData,
    load_breast_cancer,
    load_diabetes,
    load_digits,
)
from .simulated import VaryingInterceptsData, simulate_varying_intercepts

__all__ = [
    "RowDataset", "TensorDataModule", "EightSchoolsData", "BreastCancerData", "DiabetesData",
    "VaryingInterceptsData", "DigitsData", "load_breast_cancer", "load_diabetes", "load_digits",
    "simulate_varying_intercepts",
    "EIGHT_SCHOOLS_Y", "EIGHT_SCHOOLS_SIGMA",
]
