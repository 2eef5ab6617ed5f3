"""Data sets and ``LightningDataModule`` s yielding dict batches, all offline."""

from .base import RowDataset, TensorDataModule
from .real import (
    EIGHT_SCHOOLS_SIGMA,
    EIGHT_SCHOOLS_Y,
    BreastCancerData,
    DiabetesData,
    DigitsData,
    EightSchoolsData,
    IrisData,
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_iris,
)
from .simulated import (
    ChangePointData,
    HMMData,
    VaryingInterceptsData,
    simulate_changepoint,
    simulate_hmm,
    simulate_varying_intercepts,
)

__all__ = [
    "RowDataset", "TensorDataModule", "EightSchoolsData", "BreastCancerData", "DiabetesData",
    "VaryingInterceptsData", "DigitsData", "load_breast_cancer", "load_diabetes", "load_digits",
    "simulate_varying_intercepts", "IrisData", "load_iris", "HMMData", "simulate_hmm", "ChangePointData",
    "simulate_changepoint",
    "EIGHT_SCHOOLS_Y", "EIGHT_SCHOOLS_SIGMA",
]
