"""Accuracy benchmark: guides against posteriordb's gold-standard reference draws.

For each posterior in ``../shared/posteriordb`` (see quivers.models.posteriordb) and each
guide, fit with SVI, draw from the guide, and compare with the reference draws per
parameter (Stan's names, transformed parameters computed from the draws):

  max standardized mean error   max_i |mean_q - mean_ref| / sd_ref
  max |log sd ratio|            max_i |log(sd_q / sd_ref)|
  mean standardized W1          mean_i W1(q_i, ref_i) / sd_ref_i   (equal-size samples: mean |sorted diff|)
  fit seconds                   wall time of the SVI loop (and the Laplace Hessian)

Settings "anchors": the anchors' budget (20,000 Adam steps, lr 0.01, 1 particle, seed 0,
init_to_uniform as NumPyro's autoguides, float64, 10,000 draws).

usage:
  python benchmarks/accuracy.py                                  # everything: JSON + markdown
  python benchmarks/accuracy.py --posteriors eight_schools-eight_schools_noncentered --steps 500
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import platform
import time

import numpy as np
import torch

from quivers.guides import (
    AutoDiagonalNormal,
    AutoLaplaceApproximation,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormalGuide,
    init_to_uniform,
)
from quivers.infer import SVI, Trace_ELBO
from quivers.models.posteriordb import POSTERIORS, load_posterior

HERE = pathlib.Path(__file__).resolve().parent
GUIDES = {
    "AutoNormal": AutoNormalGuide,
    "AutoDiagonalNormal": AutoDiagonalNormal,
    "AutoMultivariateNormal": AutoMultivariateNormal,
    "AutoLowRankMVN": AutoLowRankMultivariateNormal,
    "AutoLaplace": AutoLaplaceApproximation,
}


def metrics(draws: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """The three accuracy metrics of ``draws`` (S, D) against ``ref`` (R, D)."""
    sd_ref = ref.std(0)
    mean_err = np.abs(draws.mean(0) - ref.mean(0)) / sd_ref
    log_sd = np.abs(np.log(draws.std(0) / sd_ref))
    n = min(len(draws), len(ref))
    qs = (np.arange(n) + 0.5) / n  # W1 between the two empirical quantile functions
    w1 = np.abs(np.quantile(draws, qs, axis=0) - np.quantile(ref, qs, axis=0)).mean(0) / sd_ref
    return {"max_std_mean_err": float(mean_err.max()), "max_abs_log_sd_ratio": float(log_sd.max()),
            "mean_std_w1": float(w1.mean())}


def fit_one(name: str, guide_name: str, steps: int, lr: float, draws: int, seed: int) -> dict:
    torch.manual_seed(seed)
    post = load_posterior(name)
    model, batch = post.model, post.batch
    guide = GUIDES[guide_name](model, init_loc_fn=init_to_uniform)
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=lr), Trace_ELBO())
    t0 = time.perf_counter()
    losses = [svi.step(batch) for _ in range(steps)]
    sampler = guide.laplace_approximation(batch) if guide_name == "AutoLaplace" else guide
    seconds = time.perf_counter() - t0
    z = sampler.sample_posterior(batch, (draws,))
    values = model.reference_values(z, batch)
    q = torch.stack([values[n] for n in post.names], -1).double().numpy()
    out = {"posterior": name, "guide": guide_name, "steps": steps, "fit_s": round(seconds, 2),
           "final_loss": float(np.mean(losses[-100:])) if losses else None}
    if not np.isfinite(q).all():
        return {**out, "error": "non-finite draws"}
    return {**out, **metrics(q, post.draws)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--posteriors", default=",".join(POSTERIORS))
    ap.add_argument("--guides", default=",".join(GUIDES))
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--draws", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--out", default=str(HERE / "results" / "accuracy.json"))
    ap.add_argument("--markdown", default=str(HERE / "results" / "accuracy.md"))
    args = ap.parse_args()
    torch.set_default_dtype(getattr(torch, args.dtype))
    rows = []
    for name in args.posteriors.split(","):
        for g in args.guides.split(","):
            try:
                r = fit_one(name, g, args.steps, args.lr, args.draws, args.seed)
            except Exception as e:  # noqa: BLE001 - a failed cell is reported, not fatal
                r = {"posterior": name, "guide": g, "error": f"{type(e).__name__}: {e}"[:300]}
            rows.append(r)
            w1 = r.get("mean_std_w1")
            print(f"{name:42s} {g:24s} " + (f"W1 {w1:.3f}  fit {r['fit_s']:.1f}s" if w1 is not None
                                             else r.get("error", "")), flush=True)
    guides = args.guides.split(",")
    lines = ["| posterior | " + " | ".join(guides) + " |", "|---|" + "---|" * len(guides)]
    for name in args.posteriors.split(","):
        cells = []
        for g in guides:
            r = next(x for x in rows if x["posterior"] == name and x["guide"] == g)
            cells.append("failed" if "mean_std_w1" not in r else f"{r['mean_std_w1']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print("\nmean standardized W1\n" + table)
    meta = {"machine": f"{platform.platform()}", "settings": "anchors", "steps": args.steps, "lr": args.lr,
            "particles": 1, "seed": args.seed, "draws": args.draws, "dtype": args.dtype,
            "command": "python benchmarks/accuracy.py"}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2, default=lambda x: None
                              if isinstance(x, float) and math.isnan(x) else x))
    pathlib.Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
