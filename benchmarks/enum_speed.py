"""Speed of discrete enumeration: ms per SVI step of ``TraceEnum_ELBO`` + ``AutoNormal``,
quivers side by side with Pyro's ``TraceEnum_ELBO`` and ``JitTraceEnum_ELBO``.

Problems:

* ``mixture``: a 5-component Gaussian mixture of 10,000 two-dimensional points (weights,
  locations, scales global; each point's component enumerated);
* ``hmm``: a 5-state HMM with Gaussian emissions and ``T`` steps (``--lengths``, default
  500 and 5,000): quivers' ``Markov`` site (forward algorithm, parallel scan), Pyro's
  ``pyro.markov`` loop (its HMM examples' form, one site per step).

Each (system, problem) runs in its own process with one compute thread, warms up (the
compiled and JIT paths compile then), then times blocks of steps; the figure is the
median block's ms per step.

usage: python benchmarks/enum_speed.py [--lengths 500,5000] [--only quivers,pyro] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time

K_MIX, N_MIX, D_MIX, K_HMM = 5, 10_000, 2, 5


def _data(problem: str, length: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(0)
    if problem == "mixture":
        locs = 4.0 * torch.randn(K_MIX, D_MIX, generator=g)
        c = torch.randint(0, K_MIX, (N_MIX,), generator=g)
        return {"x": locs[c] + torch.randn(N_MIX, D_MIX, generator=g)}
    off = 0.1 / (K_HMM - 1)  # stay with probability 0.9
    trans = torch.full((K_HMM, K_HMM), off) + (0.9 - off) * torch.eye(K_HMM)
    z = [0]
    for _ in range(length - 1):
        z.append(int(torch.multinomial(trans[z[-1]], 1, generator=g)))
    return {"y": torch.linspace(-4.0, 4.0, K_HMM)[torch.tensor(z)] + 0.5 * torch.randn(length, generator=g)}


def _quivers(problem: str, length: int, compile: bool):
    import torch
    from torch import distributions as dist

    from quivers import Latent, Markov, MonadicProgram, Observed, Plate, vindex
    from quivers.guides import AutoNormalGuide
    from quivers.infer import SVI, TraceEnum_ELBO

    d = _data(problem, length)

    class Mixture(MonadicProgram):
        def __init__(self):
            super().__init__()
            data = Plate("data", size=N_MIX)
            self.declare(
                Latent("weights", lambda: dist.Dirichlet(torch.ones(K_MIX))),
                Latent("locs", lambda: dist.Independent(dist.Normal(torch.zeros(K_MIX, D_MIX), 10.0), 2)),
                Latent("scale", lambda: dist.LogNormal(0.0, 1.0)),
                Latent("c", lambda weights: dist.Categorical(weights), plate=data, enumerate="parallel"),
                Observed("x", lambda c, locs, scale: dist.Independent(
                    dist.Normal(vindex(locs, c, 1), scale[..., None]), 1), plate=data),
            )

    class HMM(MonadicProgram):
        def __init__(self):
            super().__init__()
            time_ = Plate("time", size=length)
            self.declare(
                Latent("trans", lambda: dist.Independent(dist.Dirichlet(torch.ones(K_HMM, K_HMM)), 1)),
                Latent("locs", lambda: dist.Independent(dist.Normal(torch.linspace(-4.0, 4.0, K_HMM), 1.0), 1)),
                Latent("scale", lambda: dist.LogNormal(0.0, 1.0)),
                Markov("z", init=lambda: dist.Categorical(logits=torch.zeros(K_HMM)),
                       transition=lambda prev, trans: dist.Categorical(probs=vindex(trans, prev, 1)), plate=time_),
                Observed("y", lambda z, locs, scale: dist.Normal(vindex(locs, z), scale), plate=time_),
            )

    model = Mixture() if problem == "mixture" else HMM()
    guide = AutoNormalGuide(model)
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.01), TraceEnum_ELBO(), compile=compile)
    return lambda: svi.step(d)


def _pyro(problem: str, length: int, jit: bool):
    import pyro
    import pyro.distributions as pdist
    import torch
    from pyro.infer import SVI, JitTraceEnum_ELBO, TraceEnum_ELBO, config_enumerate
    from pyro.infer.autoguide import AutoNormal
    from pyro.ops.indexing import Vindex

    pyro.clear_param_store()
    d = _data(problem, length)

    if problem == "mixture":
        x = d["x"]

        @config_enumerate
        def model(x):
            weights = pyro.sample("weights", pdist.Dirichlet(torch.ones(K_MIX)))
            locs = pyro.sample("locs", pdist.Normal(torch.zeros(K_MIX, D_MIX), 10.0).to_event(2))
            scale = pyro.sample("scale", pdist.LogNormal(0.0, 1.0))
            with pyro.plate("data", N_MIX):
                c = pyro.sample("c", pdist.Categorical(weights))
                pyro.sample("x", pdist.Normal(Vindex(locs)[..., c, :], scale).to_event(1), obs=x)

        args = (x,)
        hide = ["c"]
    else:
        y = d["y"]

        def model(y):
            trans = pyro.sample("trans", pdist.Dirichlet(torch.ones(K_HMM, K_HMM)).to_event(1))
            locs = pyro.sample("locs", pdist.Normal(torch.linspace(-4.0, 4.0, K_HMM), 1.0).to_event(1))
            scale = pyro.sample("scale", pdist.LogNormal(0.0, 1.0))
            z = 0
            for t in pyro.markov(range(len(y))):
                probs = trans[z] if t else torch.ones(K_HMM) / K_HMM
                z = pyro.sample(f"z_{t}", pdist.Categorical(probs), infer={"enumerate": "parallel"})
                pyro.sample(f"y_{t}", pdist.Normal(Vindex(locs)[..., z], scale), obs=y[t])

        args = (y,)
        hide = [f"z_{t}" for t in range(length)]
    guide = AutoNormal(pyro.poutine.block(model, hide=hide))
    elbo = (JitTraceEnum_ELBO if jit else TraceEnum_ELBO)(max_plate_nesting=1 if problem == "mixture" else 0)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), elbo)
    return lambda: svi.step(*args)


def _worker(spec: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    system, problem, length = spec["system"], spec["problem"], spec["length"]
    make = {"quivers": lambda: _quivers(problem, length, False),
            "quivers_compiled": lambda: _quivers(problem, length, True),
            "pyro": lambda: _pyro(problem, length, False), "pyro_jit": lambda: _pyro(problem, length, True)}[system]
    step = make()
    t0 = time.perf_counter()
    for _ in range(spec["warm"]):
        step()
    warm_s = time.perf_counter() - t0
    blocks = []
    for _ in range(spec["blocks"]):
        t0 = time.perf_counter()
        for _ in range(spec["block"]):
            step()
        blocks.append((time.perf_counter() - t0) / spec["block"] * 1000)
    return {"ms": statistics.median(blocks), "warm_s": warm_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="500,5000")
    ap.add_argument("--only", default="quivers,quivers_compiled,pyro,pyro_jit")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return
    systems = [s for s in args.only.split(",") if not s.startswith("pyro") or importlib.util.find_spec("pyro")]
    cases = [("mixture", 0)] + [("hmm", int(t)) for t in args.lengths.split(",")]
    found = "found" if importlib.util.find_spec("pyro") else "missing (pip install pyro-ppl)"
    print(f"ms per step, one thread ({', '.join(systems)}); pyro {found}")
    print("| problem | " + " | ".join(systems) + " |")
    print("|---|" + "---|" * len(systems))
    results = {}
    for problem, length in cases:
        row = []
        for system in systems:
            slow = system.startswith("pyro") and problem == "hmm"
            n = 1 if args.quick else (2 if slow and length > 1000 else (5 if slow else 20))
            spec = {"system": system, "problem": problem, "length": length, "warm": 1 if args.quick else 3,
                    "block": n, "blocks": 1 if args.quick else 3}
            out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                                 text=True, timeout=3600)
            if out.returncode:
                row.append("failed")
                print(out.stderr[-2000:], file=sys.stderr)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[(problem, length, system)] = r
            row.append(f"{r['ms']:.2f} (warm-up {r['warm_s']:.1f} s)")
        name = "(d) mixture, K=5, N=10,000" if problem == "mixture" else f"(e) HMM, K=5, T={length:,}"
        print(f"| {name} | " + " | ".join(row) + " |", flush=True)
    for problem, length in cases:
        q, p = results.get((problem, length, "quivers")), results.get((problem, length, "pyro"))
        qc, pj = results.get((problem, length, "quivers_compiled")), results.get((problem, length, "pyro_jit"))
        if q and p:
            ok = "met" if p["ms"] / q["ms"] >= 2 else "not met"
            print(f"{problem} T={length}: Pyro eager / quivers eager = {p['ms'] / q['ms']:.1f} (target >= 2: {ok})")
        if qc and pj:
            ok = "met" if qc["ms"] < pj["ms"] else "not met"
            print(f"{problem} T={length}: quivers compiled {qc['ms']:.2f} ms vs Pyro JIT {pj['ms']:.2f} ms "
                  f"(target faster: {ok})")
    hmm = sorted((length, r["ms"]) for (p, length, s), r in results.items() if p == "hmm" and s == "quivers")
    if len(hmm) >= 2:
        (t0, m0), (t1, m1) = hmm[0], hmm[-1]
        ok = "met" if m1 / m0 <= t1 / t0 else "not met"
        print(f"HMM, quivers eager: {m0:.2f} ms at T={t0:,}, {m1:.2f} ms at T={t1:,}: x{m1 / m0:.2f} for "
              f"x{t1 / t0:.0f} the length (target linear or better: {ok})")


if __name__ == "__main__":
    main()
