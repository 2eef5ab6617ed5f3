"""Where the default fit's wall time goes, per posterior: the parts of ``SVI(model, guide).run``.

For each posterior of ../shared/posteriordb and AutoMultivariateNormal (float64, one thread):
the warm start (``laplace_warm_start(guide, batch, num_restarts=2)``, as ``SVI.run`` calls it),
the ms per eager SVI step in whitened coordinates with 16 particles (200 steps after 20
warm-up steps), and the PSIS diagnostic's 1000 draws (ArviZ imported beforehand; its first
import costs about 2 s once per process).

usage: python benchmarks/run_phases.py [--posteriors a,b,...]
"""

from __future__ import annotations

import argparse
import time

import torch

from quivers.guides import AutoMultivariateNormal, laplace_warm_start
from quivers.infer import SVI, Trace_ELBO, psis_diagnostic
from quivers.models.posteriordb import POSTERIORS, load_posterior


def phases(name: str) -> dict[str, float]:
    torch.manual_seed(0)
    post = load_posterior(name)
    guide = AutoMultivariateNormal(post.model)
    t = time.perf_counter()
    ws = laplace_warm_start(guide, post.batch, num_restarts=2)
    warm = time.perf_counter() - t
    svi = SVI(post.model, guide, loss=Trace_ELBO(num_particles=16))
    with guide.whitened(ws.loc, ws.cov):
        for _ in range(20):
            svi.step(post.batch)
        t = time.perf_counter()
        for _ in range(200):
            svi.step(post.batch)
        step_ms = (time.perf_counter() - t) / 200 * 1e3
    t = time.perf_counter()
    psis_diagnostic(post.model, guide, post.batch, 1000)
    psis = time.perf_counter() - t
    return {"latent_dim": guide.latent_dim, "warm_start_s": warm, "newton_iterations": ws.iterations,
            "step_ms": step_ms, "psis_s": psis}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--posteriors", default=",".join(POSTERIORS))
    args = ap.parse_args()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    import arviz  # noqa: F401  (its import is a one-off per process, not part of a fit)

    print("| posterior | D | warm start (s) | iterations | ms per SVI step (16 particles) | PSIS (s) |")
    print("|---|---|---|---|---|---|")
    for name in args.posteriors.split(","):
        r = phases(name)
        print(f"| {name} | {r['latent_dim']} | {r['warm_start_s']:.2f} | {r['newton_iterations']} | "
              f"{r['step_ms']:.2f} | {r['psis_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
