"""Posterior summary table, its CSV/JSON files and plot."""

from __future__ import annotations

import csv
import json
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..guides.guide import Guide
from ..infer.inference_data import to_inference_data
from ..program import MonadicProgram

__all__ = ["posterior_summary", "format_summary", "write_summary", "plot_summary"]

COLUMNS = ("site", "mean", "sd", "5%", "50%", "95%")


def _element_names(name: str, shape: tuple[int, ...]) -> list[str]:
    dims = [s for s in shape if s != 1]
    if not dims:
        return [name]
    names = []
    for idx in torch.cartesian_prod(*[torch.arange(d) for d in dims]).reshape(-1, len(dims)).tolist():
        names.append(f"{name}[{','.join(str(i) for i in idx)}]")
    return names


def posterior_summary(
    model: MonadicProgram, guide: Guide, batch: Mapping[str, torch.Tensor] | None = None,
    num_samples: int = 1000, sites: Sequence[str] | None = None, idata: Any = None,
) -> list[dict[str, float | str]]:
    """Mean, sd and 5/50/95% quantiles of each scalar element of the latent and
    deterministic sites, computed by ArviZ (``az.summary``) from ``num_samples`` posterior
    draws (:func:`~quivers.infer.to_inference_data`), or from ``idata`` when given.

    Returns
    -------
    list of dict
        One row per scalar element, keys :data:`COLUMNS`; site elements are named
        ``site[i,j]`` (0-based, singleton dimensions dropped).
    """
    import arviz as az

    if idata is None:
        idata = to_inference_data(model, guide, batch, num_samples, posterior_predictive=False,
                                  log_likelihood=False)
    if sites is None:
        sites = list(idata.posterior.data_vars)
    stats = {"5%": lambda x: np.quantile(x, 0.05), "50%": np.median, "95%": lambda x: np.quantile(x, 0.95)}
    table = az.summary(idata, var_names=list(sites), kind="stats", stat_funcs=stats, extend=True)
    names = [n for site in sites for n in _element_names(site, idata.posterior[site].shape[2:])]
    if len(names) != len(table):
        raise AssertionError(f"az.summary gave {len(table)} rows for {len(names)} elements")
    return [{"site": n, **{c: float(row[c]) for c in COLUMNS[1:]}} for n, (_, row) in zip(names, table.iterrows(),
                                                                                          strict=True)]


def format_summary(rows: Sequence[Mapping[str, float | str]], max_rows: int = 40) -> str:
    """A fixed-width text table of :func:`posterior_summary` rows (at most ``max_rows``)."""
    width = max([len(str(r["site"])) for r in rows] + [4])
    lines = [f"{'site':<{width}} " + " ".join(f"{c:>9}" for c in COLUMNS[1:])]
    for r in rows[:max_rows]:
        lines.append(f"{r['site']:<{width}} " + " ".join(f"{float(r[c]):>9.3f}" for c in COLUMNS[1:]))
    if len(rows) > max_rows:
        lines.append(f"... {len(rows) - max_rows} more rows in posterior_summary.csv")
    return "\n".join(lines)


def write_summary(rows: Sequence[Mapping[str, float | str]], directory: str | pathlib.Path) -> list[pathlib.Path]:
    """Write ``posterior_summary.csv`` and ``posterior_summary.json`` into ``directory``."""
    d = pathlib.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = d / "posterior_summary.csv", d / "posterior_summary.json"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    json_path.write_text(json.dumps(list(rows), indent=2))
    return [csv_path, json_path]


def _elbo_curve(metrics_csv: pathlib.Path) -> tuple[list[float], list[float]]:
    steps, values = [], []
    if metrics_csv.exists():
        with metrics_csv.open() as f:
            for row in csv.DictReader(f):
                v = row.get("train/elbo_step")
                if v not in (None, ""):
                    steps.append(float(row["step"]))
                    values.append(float(v))
    return steps, values


def _smooth(values: Sequence[float]) -> np.ndarray:
    """Centred moving average over about 2% of the points (at least 1)."""
    v = np.asarray(values, dtype=float)
    w = max(1, len(v) // 50)
    if w == 1:
        return v
    kernel = np.ones(w) / w
    padded = np.pad(v, (w // 2, w - 1 - w // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def plot_summary(
    rows: Sequence[Mapping[str, float | str]], path: str | pathlib.Path,
    metrics_csv: str | pathlib.Path | None = None,
) -> pathlib.Path:
    """PNG with the posterior intervals (5-95%, median) of every row and, if ``metrics_csv``
    (a CSVLogger ``metrics.csv``) is given, the training ELBO per step with its moving
    average over 2% of the steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(rows)
    curve = _elbo_curve(pathlib.Path(metrics_csv)) if metrics_csv else ([], [])
    ncols = 2 if curve[0] else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, max(3.0, 0.22 * len(rows) + 1)), squeeze=False)
    ax = axes[0, 0]
    y = list(range(len(rows)))[::-1]
    ax.hlines(y, [float(r["5%"]) for r in rows], [float(r["95%"]) for r in rows], color="C0", lw=2)
    ax.plot([float(r["50%"]) for r in rows], y, "o", color="C1", ms=4)
    ax.set_yticks(y, [str(r["site"]) for r in rows], fontsize=8 if len(rows) > 40 else 10)
    ax.set_ylim(-1, len(rows))
    ax.set_title("posterior: median and 5-95% interval")
    ax.grid(axis="x", alpha=0.3)
    if ncols == 2:
        ax2 = axes[0, 1]
        steps, values = curve
        ax2.plot(steps, values, lw=0.5, color="C0", alpha=0.35, label="per step")
        ax2.plot(steps, _smooth(values), lw=1.5, color="C0", label="moving average")
        finite = sorted(v for v in values if math.isfinite(v))
        if len(finite) > 20:
            ax2.set_ylim(bottom=finite[len(finite) // 20])
        ax2.set_xlabel("step")
        ax2.set_ylabel("ELBO (nats)")
        ax2.set_title("training ELBO")
        ax2.legend(loc="lower right")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
