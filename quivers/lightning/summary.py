"""Posterior summary table, its CSV/JSON files and plot."""

from __future__ import annotations

import csv
import json
import math
import pathlib
from collections.abc import Mapping, Sequence

import torch

from ..guides.guide import Guide
from ..infer.predictive import Predictive
from ..program import MonadicProgram

__all__ = ["posterior_summary", "format_summary", "write_summary", "plot_summary"]

COLUMNS = ("site", "mean", "sd", "5%", "50%", "95%")


def _element_names(name: str, shape: torch.Size) -> list[str]:
    dims = [s for s in shape if s != 1]
    if not dims:
        return [name]
    names = []
    for idx in torch.cartesian_prod(*[torch.arange(d) for d in dims]).reshape(-1, len(dims)).tolist():
        names.append(f"{name}[{','.join(str(i) for i in idx)}]")
    return names


def posterior_summary(
    model: MonadicProgram, guide: Guide, batch: Mapping[str, torch.Tensor] | None = None,
    num_samples: int = 1000, sites: Sequence[str] | None = None,
) -> list[dict[str, float | str]]:
    """Mean, sd and 5/50/95% quantiles of each scalar element of the latent and
    deterministic sites, from ``num_samples`` posterior draws.

    Returns
    -------
    list of dict
        One row per scalar element, keys :data:`COLUMNS`; site elements are named
        ``site[i,j]`` (0-based, singleton dimensions dropped).
    """
    if sites is None:
        sites = list(guide.latent_names) + [s.name for s in model.steps if s.kind == "deterministic"]
    draws = Predictive(model, guide, num_samples=num_samples, return_sites=sites)(batch or {})
    rows = []
    for name in sites:
        v = draws[name].reshape(num_samples, -1).double()
        elem = _element_names(name, draws[name].shape[1:])
        q = torch.quantile(v, torch.tensor([0.05, 0.5, 0.95], dtype=v.dtype, device=v.device), dim=0)
        mean, sd = v.mean(0), v.std(0)
        for i, en in enumerate(elem):
            rows.append({"site": en, "mean": float(mean[i]), "sd": float(sd[i]),
                         "5%": float(q[0, i]), "50%": float(q[1, i]), "95%": float(q[2, i])})
    return rows


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


def plot_summary(
    rows: Sequence[Mapping[str, float | str]], path: str | pathlib.Path,
    metrics_csv: str | pathlib.Path | None = None, max_rows: int = 40,
) -> pathlib.Path:
    """PNG with the posterior intervals (5-95%, median) and, if ``metrics_csv`` (a
    CSVLogger ``metrics.csv``) is given, the ELBO curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(rows)[:max_rows]
    curve = _elbo_curve(pathlib.Path(metrics_csv)) if metrics_csv else ([], [])
    ncols = 2 if curve[0] else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, max(3.0, 0.28 * len(rows) + 1)), squeeze=False)
    ax = axes[0, 0]
    y = list(range(len(rows)))[::-1]
    ax.hlines(y, [float(r["5%"]) for r in rows], [float(r["95%"]) for r in rows], color="C0", lw=2)
    ax.plot([float(r["50%"]) for r in rows], y, "o", color="C1", ms=4)
    ax.set_yticks(y, [str(r["site"]) for r in rows])
    ax.set_title("posterior: median and 5-95% interval")
    ax.grid(axis="x", alpha=0.3)
    if ncols == 2:
        ax2 = axes[0, 1]
        steps, values = curve
        ax2.plot(steps, values, lw=1)
        lo = sorted(values)[len(values) // 20] if len(values) > 20 else min(values)
        if math.isfinite(lo):
            ax2.set_ylim(bottom=lo)
        ax2.set_xlabel("step")
        ax2.set_ylabel("ELBO (nats)")
        ax2.set_title("training ELBO")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
