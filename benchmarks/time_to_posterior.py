"""Time to posterior: the wall time of quivers' default fit beside NumPyro's NUTS, on the ten
posteriors of ``../shared/posteriordb``, in one run.

quivers   ``SVI(model, AutoMultivariateNormal(model)).run(batch)`` with nothing set: float64
          Newton warm start with 2 restarts, whitened Adam with 16 particles until the ELBO
          stops improving, the decaying-lr refine phase with averaging, the PSIS k-hat of
          1,000 draws, and compilation when ``SVI.run`` chooses it. The clock runs from the
          guide's construction to the end of ``run``.
NUTS      NumPyro's NUTS, one chain, 500 warm-up + 500 draws, float64, the models ported in
          numpyro_posteriors.py; the clock runs from ``MCMC.run``'s call (JIT compilation
          included) to its last draw.

Library imports are off both clocks (jax and numpyro on one side; torch, quivers and
ArviZ, whose import the PSIS diagnostic would otherwise pay, about 1.8 s, on the other).
Each fit runs in its own process with one compute thread (torch and XLA). Beside the
times, each side's accuracy against posteriordb's reference draws (mean standardised W1
over the parameters, as in accuracy.py) shows that both reached the posterior: the SVI
fit from 10,000 guide draws, NUTS from its 500.

usage:
  python benchmarks/time_to_posterior.py
  python benchmarks/time_to_posterior.py --posteriors arK-arK,sblrc-blr
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
TARGET_WINS = 8  # the bound: the default fit at most NUTS's wall time on 8 of 10


def _quivers(name: str, seed: int) -> dict:
    import torch

    from quivers.guides import AutoMultivariateNormal
    from quivers.infer import SVI
    from quivers.models.posteriordb import load_posterior

    torch.set_default_dtype(torch.float64)
    torch.manual_seed(seed)
    post = load_posterior(name)
    import arviz  # noqa: F401 - library imports stay off both clocks (NUTS's side imports jax first)
    t0 = time.perf_counter()
    guide = AutoMultivariateNormal(post.model)
    result = SVI(post.model, guide).run(post.batch, progress_bar=False)
    seconds = time.perf_counter() - t0
    z = guide.sample_posterior(post.batch, (10_000,))
    values = post.model.reference_values(z, post.batch)
    draws = torch.stack([values[n] for n in post.names], -1).double().numpy()
    return {"seconds": seconds, "steps": result.num_steps, "k_hat": result.diagnostics.k_hat,
            "notes": result.notes, **_accuracy(draws, post.draws)}


def _nuts(name: str, seed: int) -> dict:
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from numpyro.infer import MCMC, NUTS
    from numpyro_posteriors import MODELS

    from quivers.models.posteriordb import load_posterior

    post = load_posterior(name)
    batch = {k: jnp.asarray(v.double().numpy()) for k, v in post.batch.items()}
    model, values = MODELS[name]
    mcmc = MCMC(NUTS(model), num_warmup=500, num_samples=500, num_chains=1, progress_bar=False)
    t0 = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), batch)
    z = mcmc.get_samples()
    jax.block_until_ready(z)
    seconds = time.perf_counter() - t0
    ref = values(z, batch)
    draws = np.stack([np.asarray(ref[n]) for n in post.names], -1)
    return {"seconds": seconds, "steps": 1000, **_accuracy(draws, post.draws)}


def _accuracy(draws, ref) -> dict:
    from accuracy import metrics

    return metrics(draws, ref)


def run_one(system: str, name: str, seed: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
           "PYTHONWARNINGS": "ignore"}
    spec = json.dumps({"system": system, "name": name, "seed": seed})
    r = subprocess.run([sys.executable, __file__, "--worker", spec], capture_output=True, text=True, env=env,
                       timeout=3600)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def table(rows: dict[str, dict]) -> tuple[str, int, int]:
    lines = ["| posterior | default fit (s) | SVI steps | W1 | NUTS 500+500 (s) | NUTS W1 | fit / NUTS | met |",
             "|---|---|---|---|---|---|---|---|"]
    wins = total = 0
    for name, r in rows.items():
        q, n = r.get("quivers", {}), r.get("nuts", {})
        if "seconds" not in q or "seconds" not in n:
            lines.append(f"| {name} | {q.get('error', '-')} | | | {n.get('error', '-')} | | | |")
            continue
        ratio = q["seconds"] / n["seconds"]
        total += 1
        wins += ratio <= 1
        lines.append(f"| {name} | {q['seconds']:.2f} | {q['steps']} | {q['mean_std_w1']:.3f} | {n['seconds']:.2f} | "
                     f"{n['mean_std_w1']:.3f} | {ratio:.2f} | {'yes' if ratio <= 1 else '**no**'} |")
    lines.append("")
    lines.append(f"Default fit within NUTS's wall time: **{wins} of {total}** (target {TARGET_WINS} of 10: "
                 f"{'met' if wins >= TARGET_WINS else '**not met**'}).")
    return "\n".join(lines), wins, total


def main() -> None:
    from quivers.models.posteriordb import POSTERIORS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker")
    ap.add_argument("--posteriors", default=",".join(POSTERIORS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results" / "time_to_posterior.json"))
    ap.add_argument("--markdown", default=str(HERE / "results" / "time_to_posterior.md"))
    args = ap.parse_args()
    if args.worker:
        sys.path.insert(0, str(HERE))
        spec = json.loads(args.worker)
        fn = _quivers if spec["system"] == "quivers" else _nuts
        print(json.dumps(fn(spec["name"], spec["seed"])))
        return
    print(f"time to posterior ({platform.processor() or platform.machine()}, one thread per fit)")
    rows: dict[str, dict] = {}
    for name in args.posteriors.split(","):
        rows[name] = {}
        for system in ("quivers", "nuts"):
            rows[name][system] = r = run_one(system, name, args.seed)
            what = f"{r['seconds']:.2f} s, W1 {r['mean_std_w1']:.3f}" if "seconds" in r else r["error"]
            print(f"  {name:42s} {system:8s} {what}", flush=True)
    md, wins, total = table(rows)
    meta = {"machine": f"{platform.platform()}, {os.cpu_count()} cores", "python": platform.python_version(),
            "command": "python benchmarks/time_to_posterior.py", "seed": args.seed}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": rows, "wins": wins, "total": total}, indent=1))
    pathlib.Path(args.markdown).write_text(md + "\n")
    print("\n" + md)


if __name__ == "__main__":
    main()
