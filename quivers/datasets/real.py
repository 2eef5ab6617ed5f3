"""Real data sets, available offline: eight schools (in code) and scikit-learn's bundled sets."""

from __future__ import annotations

import torch

from .base import TensorDataModule

__all__ = [
    "EIGHT_SCHOOLS_Y", "EIGHT_SCHOOLS_SIGMA", "EightSchoolsData", "BreastCancerData", "DiabetesData", "DigitsData",
    "load_breast_cancer", "load_diabetes", "load_digits",
]

# Rubin, D. B. (1981). Estimation in parallel randomized experiments. Journal of
# Educational Statistics 6(4), 377-401. Estimated coaching effects (y) and their
# standard errors (sigma) for the SAT-V in eight schools (also Gelman et al., BDA3, 5.5).
EIGHT_SCHOOLS_Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
EIGHT_SCHOOLS_SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)


class EightSchoolsData(TensorDataModule):
    """Eight schools (Rubin 1981): fields ``y`` and ``sigma``, plate ``schools``, 8 rows,
    one full batch (repeated ``steps_per_epoch`` times per epoch)."""

    def __init__(self, steps_per_epoch: int = 1) -> None:
        super().__init__(
            {"y": torch.tensor(EIGHT_SCHOOLS_Y), "sigma": torch.tensor(EIGHT_SCHOOLS_SIGMA)},
            plate="schools", steps_per_epoch=steps_per_epoch,
        )


def _standardize(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(0)) / x.std(0)


def load_breast_cancer() -> dict[str, torch.Tensor]:
    """Wisconsin diagnostic breast cancer (Street, Wolberg & Mangasarian 1993), as shipped by
    scikit-learn: ``x`` (569 x 30, standardized features), ``y`` (569, 1.0 = benign)."""
    from sklearn.datasets import load_breast_cancer as load

    d = load()
    x = torch.tensor(d.data, dtype=torch.get_default_dtype())
    return {"x": _standardize(x), "y": torch.tensor(d.target, dtype=torch.get_default_dtype())}


def load_diabetes() -> dict[str, torch.Tensor]:
    """Diabetes progression (Efron, Hastie, Johnstone & Tibshirani 2004, "Least Angle
    Regression"), as shipped by scikit-learn: ``x`` (442 x 10, standardized), ``y`` (442,
    disease progression after one year, standardized)."""
    from sklearn.datasets import load_diabetes as load

    d = load()
    x = torch.tensor(d.data, dtype=torch.get_default_dtype())
    y = torch.tensor(d.target, dtype=torch.get_default_dtype())
    return {"x": _standardize(x), "y": (y - y.mean()) / y.std()}


class BreastCancerData(TensorDataModule):
    """Breast-cancer classification data (569 x 30), plate ``data``; see :func:`load_breast_cancer`."""

    def __init__(self, batch_size: int | None = None, val_fraction: float = 0.0, seed: int = 0,
                 steps_per_epoch: int = 1) -> None:
        super().__init__(load_breast_cancer(), "data", batch_size, val_fraction, seed=seed,
                         steps_per_epoch=steps_per_epoch)


class DiabetesData(TensorDataModule):
    """Diabetes regression data (442 x 10), plate ``data``; see :func:`load_diabetes`."""

    def __init__(self, batch_size: int | None = None, val_fraction: float = 0.0, seed: int = 0,
                 steps_per_epoch: int = 1) -> None:
        super().__init__(load_diabetes(), "data", batch_size, val_fraction, seed=seed,
                         steps_per_epoch=steps_per_epoch)


def load_iris() -> dict[str, torch.Tensor]:
    """Fisher's iris (1936), as shipped by scikit-learn: ``x`` (150 x 4, standardized sepal
    and petal lengths and widths) and ``species`` (150, ``LongTensor`` of 0, 1, 2), kept
    for checking clusterings (not a model input)."""
    from sklearn.datasets import load_iris as load

    d = load()
    x = torch.tensor(d.data, dtype=torch.get_default_dtype())
    return {"x": _standardize(x), "species": torch.tensor(d.target, dtype=torch.long)}


class IrisData(TensorDataModule):
    """Iris measurements (150 x 4, standardized), plate ``data``; see :func:`load_iris`."""

    def __init__(self, batch_size: int | None = None, seed: int = 0, steps_per_epoch: int = 1) -> None:
        super().__init__({"x": load_iris()["x"]}, "data", batch_size, 0.0, seed=seed, steps_per_epoch=steps_per_epoch)


def load_digits(threshold: float = 8.0) -> dict[str, torch.Tensor]:
    """Optical recognition of handwritten digits (Alpaydin & Kaynak 1998, UCI), as shipped
    by scikit-learn: ``x`` (1797 x 64), each 8x8 image's pixels binarised to 1.0 where the
    original intensity (0-16) is at least ``threshold``."""
    from sklearn.datasets import load_digits as load

    d = load()
    return {"x": (torch.tensor(d.data) >= threshold).to(torch.get_default_dtype())}


class DigitsData(TensorDataModule):
    """Binarised digits (1797 x 64), plate ``data``, minibatches of ``batch_size`` images;
    see :func:`load_digits`."""

    def __init__(self, batch_size: int | None = 128, val_fraction: float = 0.0, seed: int = 0,
                 with_indices: bool | None = None) -> None:
        super().__init__(load_digits(), "data", batch_size, val_fraction, with_indices=with_indices, seed=seed)
