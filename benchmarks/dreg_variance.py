"""Gradient variance of the IWAE bound: the standard estimator against DReG (Tucker et al. 2018).

The conjugate Normal-mean model of tests/test_psis.py (D = 3, 20 observations), an
AutoMultivariateNormal at the exact posterior mean shifted by ``shift`` posterior sds with
sds ``ratio`` times the posterior's; 300 gradients of each estimator (seed 4), and the ratio
of their total variances (sum over the guide's parameters).

usage: python benchmarks/dreg_variance.py
"""

from __future__ import annotations

import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

from test_psis import guide_at, setup  # noqa: E402

from quivers.infer import RenyiELBO  # noqa: E402


def gradients(objective: RenyiELBO, model, guide, batch, n: int = 300) -> torch.Tensor:
    out = []
    for _ in range(n):
        guide.zero_grad()
        objective(model, guide, batch).backward()
        out.append(torch.cat([p.grad.flatten() for p in guide.parameters()]))
    return torch.stack(out).double()


def main() -> None:
    torch.manual_seed(4)
    model, batch, mean, sd, _ = setup()
    print("| guide sd ratio | shift (sds) | K | variance ratio, IWAE / DReG |")
    print("|---|---|---|---|")
    for ratio, shift, k in [(0.9, 0.2, 8), (0.9, 0.2, 32), (0.7, 0.5, 8), (0.7, 0.5, 32)]:
        guide = guide_at(model, mean, sd, ratio, shift=shift)
        standard = gradients(RenyiELBO(0.0, k), model, guide, batch)
        dreg = gradients(RenyiELBO(0.0, k, dreg=True), model, guide, batch)
        print(f"| {ratio} | {shift} | {k} | {float(standard.var(0).sum() / dreg.var(0).sum()):.1f} |", flush=True)


if __name__ == "__main__":
    main()
