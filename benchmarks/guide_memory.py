"""Peak memory of building a guide for one large latent site, relative to the guide's
parameters.

    .venv/bin/python benchmarks/guide_memory.py --elements 4000000 --prior gamma --guide normal

Run each setting in a fresh process (the peak RSS of a process only grows). Prints the
growth of the process's peak RSS while the guide is built, the parameters' bytes, their
ratio and the build time.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from torch import distributions as dist

from quivers import Latent, MonadicProgram, Plate
from quivers.guides import AutoDeltaGuide, AutoDiagonalNormal, AutoNormalGuide

PRIORS = {
    "gamma": lambda a: dist.Gamma(a, 1.0),  # no inverse CDF: sampled median
    "normal": lambda a: dist.Normal(a, 1.0),
    "lognormal": lambda a: dist.LogNormal(a, 1.0),
    "beta": lambda a: dist.Beta(a, 2.0),
}
GUIDES = {"normal": AutoNormalGuide, "delta": AutoDeltaGuide, "diagonal": AutoDiagonalNormal}


class Big(MonadicProgram):
    """One latent site of ``n`` elements in a plate."""

    def __init__(self, n: int, prior: str) -> None:
        super().__init__()
        self.register_buffer("a", torch.full((n,), 2.0))
        self.declare(Latent("z", lambda: PRIORS[prior](self.a), plate=Plate("p", size=n)))


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=4_000_000)
    parser.add_argument("--prior", choices=sorted(PRIORS), default="gamma")
    parser.add_argument("--guide", choices=sorted(GUIDES), default="normal")
    args = parser.parse_args()
    model = Big(args.elements, args.prior)
    torch.zeros(args.elements).add_(1)  # the allocator has held one site-sized tensor already
    before, start = _peak(), time.perf_counter()
    guide = GUIDES[args.guide](model)
    seconds, grown = time.perf_counter() - start, _peak() - before
    params = sum(p.numel() * p.element_size() for p in guide.parameters())
    print(f"{args.prior} prior, {args.guide} guide, {args.elements} elements: peak grew {grown / 2**20:.0f} MiB, "
          f"parameters {params / 2**20:.0f} MiB, ratio {grown / params:.1f}, built in {seconds:.1f} s")


if __name__ == "__main__":
    main()
