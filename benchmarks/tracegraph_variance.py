"""Gradient variance of the score-function estimators on a model with a global switch and
one switch per point (``tests/test_tracegraph.py``'s ``Switches``): ``Trace_ELBO`` (the
whole ELBO times the whole score) against ``TraceGraph_ELBO`` with Rao-Blackwellisation
only (``baseline_beta=0``) and with its default decaying-average baseline.

usage: python benchmarks/tracegraph_variance.py [--draws 2000] [--seeds 3]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from test_tracegraph import Switches, X, _grad, _guide  # noqa: E402

from quivers.infer import Trace_ELBO, TraceGraph_ELBO  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    print("| seed | Trace_ELBO | TraceGraph_ELBO, no baseline | TraceGraph_ELBO | ratio (RB) | ratio (RB + baseline) |")
    print("|---|---|---|---|---|---|")
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        model = Switches()
        guide = _guide(model)
        params = list(guide.parameters())

        def variance(elbo: torch.nn.Module) -> float:
            for _ in range(50):  # warm the baseline
                elbo(model, guide, {"x": X})
            grads = torch.stack([_grad(elbo(model, guide, {"x": X}), params) for _ in range(args.draws)])
            return float(grads.var(0).sum())

        v0, v1, v2 = variance(Trace_ELBO()), variance(TraceGraph_ELBO(baseline_beta=0.0)), variance(TraceGraph_ELBO())
        print(f"| {seed} | {v0:.1f} | {v1:.1f} | {v2:.2f} | {v0 / v1:.1f} | {v0 / v2:.0f} |")


if __name__ == "__main__":
    main()
