"""The VAE example's figures: fit ``VAE`` + ``VAEEncoder`` on the digits with ``SVIModule``,
then report the reconstruction, the encoder's posterior scale and the ELBO per image.

usage: python benchmarks/vae.py [--steps 600]
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch

from quivers.datasets import DigitsData, load_digits
from quivers.infer import Trace_ELBO
from quivers.lightning import SVIModule
from quivers.models import VAE, VAEEncoder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    args = ap.parse_args()
    L.seed_everything(0)
    model = VAE()
    guide = VAEEncoder(model)
    module = SVIModule(model, guide, elbo=Trace_ELBO(), lr=0.005)
    trainer = L.Trainer(max_steps=args.steps, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, accelerator="cpu")
    t0 = time.perf_counter()
    trainer.fit(module, DigitsData(batch_size=128))
    seconds = time.perf_counter() - t0
    x = load_digits()["x"]
    with torch.no_grad():
        _, sd = guide.encode(x)
        p = model.reconstruct(guide, x).clamp(1e-6, 1 - 1e-6)
        recon = torch.distributions.Bernoulli(probs=p).log_prob(x).sum(-1).mean()
        base = torch.distributions.Bernoulli(probs=x.mean(0).clamp(1e-3, 1 - 1e-3)).log_prob(x).sum(-1).mean()
        elbo = -Trace_ELBO(num_particles=10).loss(model, guide, {"x": x}) / len(x)
    print(f"steps {args.steps}, fit {seconds:.1f} s")
    print(f"reconstruction log-likelihood per image {float(recon):.2f} nats (pixel frequencies: {float(base):.2f})")
    print(f"encoder posterior scale (mean) {float(sd.mean()):.3f}")
    print(f"ELBO per image {elbo:.2f} nats")


if __name__ == "__main__":
    main()
