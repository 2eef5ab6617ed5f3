"""Objectives on the VAE example at equal wall time: held-out log predictive density.

Fits ``VAE`` + ``VAEEncoder`` on 80% of scikit-learn's digits with ``SVIModule`` for the
same wall time under each objective, then estimates each held-out image's
``log p(x_i)`` by importance sampling from the trained encoder,
``log (1/S) sum_s p(x_i, z_s) / q(z_s | x_i)`` with ``S`` draws per image (a lower bound in
expectation that is tight as ``S`` grows; the same estimator for every objective), and
prints the mean over held-out images with its spread over seeds.

usage: python benchmarks/vae_objectives.py [--seconds 30] [--seeds 2] [--draws 1000]
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics

import lightning as L
import torch
from torch import distributions as dist

from quivers.datasets import TensorDataModule, load_digits
from quivers.infer import ELBO, RenyiELBO, Trace_ELBO
from quivers.lightning import SVIModule
from quivers.models import VAE, VAEEncoder

OBJECTIVES = {
    "Trace_ELBO": lambda: Trace_ELBO(),
    "Trace_ELBO(num_particles=8)": lambda: Trace_ELBO(num_particles=8),
    "RenyiELBO(alpha=0, K=8) (IWAE)": lambda: RenyiELBO(alpha=0.0, num_particles=8),
    "RenyiELBO(alpha=0, K=8, dreg)": lambda: RenyiELBO(alpha=0.0, num_particles=8, dreg=True),
    "RenyiELBO(alpha=0.5, K=8)": lambda: RenyiELBO(alpha=0.5, num_particles=8),
}


@torch.no_grad()
def heldout_lpd(model: VAE, guide: VAEEncoder, x: torch.Tensor, draws: int) -> float:
    """Mean over images of the importance-sampled ``log p(x_i)`` (nats per image)."""
    total = 0.0
    for chunk in x.split(120):
        loc, sd = guide.encode(chunk)
        q = dist.Normal(loc, sd)
        z = q.sample((draws,))  # (S, n, L)
        log_prior = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_lik = dist.Bernoulli(logits=model.decoder(z)).log_prob(chunk).sum(-1)
        log_w = log_lik + log_prior - q.log_prob(z).sum(-1)
        total += float((torch.logsumexp(log_w, 0) - math.log(draws)).sum())
    return total / len(x)


def fit(name: str, seed: int, seconds: float, train: torch.Tensor) -> tuple[VAE, VAEEncoder, int]:
    L.seed_everything(seed, verbose=False)
    model = VAE()
    guide = VAEEncoder(model)
    elbo: ELBO = OBJECTIVES[name]()
    module = SVIModule(model, guide, elbo=elbo, lr=0.005)
    trainer = L.Trainer(max_time={"seconds": seconds}, max_steps=-1, max_epochs=-1, logger=False,
                        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                        accelerator="cpu")
    trainer.fit(module, TensorDataModule({"x": train}, "data", batch_size=128, seed=seed))
    return model, guide, trainer.global_step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--draws", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(2)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    x = load_digits()["x"]
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_test = len(x) // 5
    test, train = x[perm[:n_test]], x[perm[n_test:]]
    print(f"{len(train)} training images, {len(test)} held out; {args.seconds:.0f} s of training per fit, "
          f"{args.draws} importance draws per held-out image")
    print(f"| objective | steps | held-out log p(x) per image (nats), mean over {args.seeds} seeds | seeds' values |")
    print("|---|---|---|---|")
    for name in OBJECTIVES:
        lpds, steps = [], []
        for seed in range(args.seeds):
            model, guide, n = fit(name, seed, args.seconds, train)
            lpds.append(heldout_lpd(model, guide, test, args.draws))
            steps.append(n)
        vals = ", ".join(f"{v:.2f}" for v in lpds)
        print(f"| `{name}` | {statistics.mean(steps):.0f} | {statistics.mean(lpds):.2f} | {vals} |", flush=True)


if __name__ == "__main__":
    main()
