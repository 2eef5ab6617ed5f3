"""Speed benchmark: ms per SVI step, quivers side by side with a hand-written PyTorch floor,
Pyro and NumPyro (see systems.py for the problems and systems).

Each (system, problem) runs in its own process with one compute thread (torch and XLA),
warms up, then times 5 blocks of steps; a run's figure is the median block's ms per step.
All runs are repeated in ``--repeats`` interleaved rounds (3 by default) and the reported
figure is the median over rounds, since on a shared VM the speed of one process can be
off by a third.

Compilation: each compiled job reports its first compiled step's extra time (the second
step minus the first, eager one; the median over rounds); ``compile_cold/a`` runs with empty on-disk compile
caches (a first compilation on a new machine), the other compiled jobs with torch's
default caches, which the earlier rounds (or runs) have filled.

usage:
  python benchmarks/speed.py                 # everything available; table + JSON + markdown
  python benchmarks/speed.py --quick         # few steps, torch systems only (a smoke run)
  python benchmarks/speed.py --only quivers,floor --problems a
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
THREADS = 1


def _worker(spec: dict) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    sys.path.insert(0, str(HERE))
    import systems

    torch.manual_seed(0)
    warm, block, nblocks = spec["warm"], spec["block"], 5
    opts = spec.get("opts", {})
    if spec["system"] == "trainer":
        marks: dict[int, float] = {}
        targets = {warm + i * block for i in range(nblocks + 1)}

        def on_block(step: int) -> None:
            if step in targets:
                marks[step] = time.perf_counter()

        run = systems.trainer(spec["problem"], spec["rows"], steps=warm + nblocks * block + 1, on_block=on_block,
                              **opts)
        run()
        times = [(marks[warm + (i + 1) * block] - marks[warm + i * block]) / block for i in range(nblocks)]
    else:
        step = systems.SYSTEMS[spec["system"]](spec["problem"], spec["rows"], **opts)
        t0 = time.perf_counter()
        for _ in range(warm):
            step()
        warm_s = time.perf_counter() - t0
        times = []
        for _ in range(nblocks):
            t = time.perf_counter()
            for _ in range(block):
                step()
            times.append((time.perf_counter() - t) / block)
        spec["warmup_s"] = round(warm_s, 2)
        spec["compile_s"] = getattr(step, "compile_s", None)
    return {**spec, "ms": statistics.median(times) * 1e3, "blocks_ms": [round(t * 1e3, 4) for t in times]}


def run_one(system: str, problem: str, rows: int, warm: int, block: int, cold_cache: bool = False, **opts) -> dict:
    """One job in a fresh process; ``cold_cache``: with empty on-disk compile caches (a
    first compilation on a new machine), otherwise torch's default caches."""
    spec = {"system": system, "problem": problem, "rows": rows, "warm": warm, "block": block, "opts": opts}
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS),
           "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
           "JAX_PLATFORMS": "cpu", "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory() if cold_cache else contextlib.nullcontext() as cache:
        if cache is not None:
            env["TORCHINDUCTOR_CACHE_DIR"] = cache
        r = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                           env=env, timeout=3600)
    if r.returncode != 0:
        return {**spec, "ms": None, "error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _have(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=None, help="comma-separated systems")
    ap.add_argument("--problems", default="a,b,c")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the figure is their median")
    ap.add_argument("--out", default=str(HERE / "results" / "speed.json"))
    ap.add_argument("--markdown", default=str(HERE / "results" / "speed.md"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return

    warm, block = (20, 20) if args.quick else (300, 300)
    if args.quick:
        args.repeats = 1
    problems = args.problems.split(",")
    systems = ["floor", "quivers", "quivers_novalid", "quivers_compiled", "pyro", "pyro_jit", "numpyro"]
    if args.quick:
        systems = ["floor", "quivers", "quivers_novalid"]
    if args.only:
        systems = [s for s in systems if s in args.only.split(",")]
    if not (_have("pyro")):
        systems = [s for s in systems if not s.startswith("pyro")]
    if not (_have("numpyro") and _have("jax")):
        systems = [s for s in systems if s != "numpyro"]
    jobs: list[tuple[str, str, str, int, dict]] = []

    def record(key: str, system: str, problem: str, rows: int = 50_000, **opts) -> None:
        jobs.append((key, system, problem, rows, opts))

    for p in problems:
        for s in systems:
            record(f"{s}/{p}", s, p)
    if not args.quick and not args.only:
        if "a" in problems:
            record("compile_cold/a", "quivers", "a", compile=True, cold_cache=True)
        if "b" in problems:
            record("quivers/b/64particles", "quivers", "b", particles=64)
            record("trainer/b", "trainer", "b")
        if "c" in problems:
            record("quivers/c/500k", "quivers", "c", rows=500_000)
        for guide in ("AutoMultivariateNormal", "AutoIAFNormal", "AutoBNAFNormal"):
            record(f"recommended/{guide}", "recommended", "a", guide=guide)

    print(f"quivers speed benchmark ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{THREADS} thread per process, {args.repeats} interleaved rounds)")
    rounds: dict[str, list[dict]] = {key: [] for key, *_ in jobs}
    for r in range(args.repeats):  # every job once per round, so slow drifts of the machine hit all alike
        for key, system, problem, rows, opts in jobs:
            slow = system == "pyro" or problem == "c"
            w, b = (warm, max(block // 3, 10)) if slow else (warm, block)
            opts = dict(opts)
            if system == "quivers_compiled":
                w, opts["compile"] = max(w, 50), True
            if system == "quivers_novalid":
                opts["validation"] = False
            if key.startswith("compile_cold"):
                w, b = 2, 2  # only the compilation is wanted
            base = {"quivers_novalid": "quivers", "quivers_compiled": "quivers"}.get(system, system)
            res = run_one(base, problem, rows, w, b, **opts)
            rounds[key].append(res)
            ms = "failed: " + res.get("error", "") if res["ms"] is None else f"{res['ms']:.3f} ms"
            print(f"  round {r + 1}  {key:<28} {ms}", flush=True)
        report = _write(rounds, args, r + 1)  # after every round: an interrupted run keeps its results
    print("\n" + report["table"])
    print(f"\nwritten: {args.out}, {args.markdown}")


def _write(rounds: dict[str, list[dict]], args: argparse.Namespace, done: int) -> dict:
    """Median over the completed rounds; JSON and markdown written."""
    results: dict[str, dict] = {}
    for key, runs in rounds.items():
        good = [x["ms"] for x in runs if x["ms"] is not None]
        compile_s = [x["compile_s"] for x in runs if x.get("compile_s") is not None]
        results[key] = {**runs[-1], "ms": statistics.median(good) if good else None,
                        "rounds_ms": [None if x["ms"] is None else round(x["ms"], 4) for x in runs],
                        "rounds_compile_s": [None if x.get("compile_s") is None else round(x["compile_s"], 2)
                                             for x in runs],
                        "compile_s": statistics.median(compile_s) if compile_s else None}
    report = _report(results)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{platform.platform()}, {os.cpu_count()} cores", "python": platform.python_version(),
            "command": "python benchmarks/speed.py" + (" --quick" if args.quick else "")
            + (f" --repeats {args.repeats}" if args.repeats != 3 else ""),
            "threads_per_process": THREADS, "rounds": done}
    out.write_text(json.dumps({"meta": meta, "results": results, "targets": report["targets"]}, indent=2))
    pathlib.Path(args.markdown).write_text(report["table"] + "\n")
    return report


def _report(results: dict[str, dict]) -> dict:
    def ms(key: str) -> float | None:
        r = results.get(key)
        return None if r is None or r["ms"] is None else r["ms"]

    systems = ["floor", "quivers", "quivers_novalid", "quivers_compiled", "pyro", "pyro_jit", "numpyro"]
    lines = ["| system | (a) eight schools | (b) logistic 569x30 | (c) varying intercepts 50k |",
             "|---|---|---|---|"]
    for s in systems:
        cells = [ms(f"{s}/{p}") for p in "abc"]
        if any(c is not None for c in cells):
            lines.append(f"| {s} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
    targets = []

    def target(what: str, num: str, den: str, op: str, bound: float) -> None:
        # the median over rounds of the ratio within each round: both jobs of a round ran
        # minutes apart at most, so a slow stretch of the VM hits both (a ratio of the
        # per-job medians can pair one job's fast round with the other's slow one)
        a, b = results.get(num), results.get(den)
        if a is None or b is None:
            return
        pairs = [x / y for x, y in zip(a["rounds_ms"], b["rounds_ms"], strict=False) if x and y]
        if not pairs:
            return
        ratio = statistics.median(pairs)
        ok = ratio <= bound if op == "<=" else ratio >= bound if op == ">=" else ratio < bound
        targets.append({"target": what, "ratio": round(ratio, 3), "bound": f"{op} {bound}", "met": ok})

    # issue 18's targets
    for p in "abc":
        target(f"eager / floor ({p})", f"quivers/{p}", f"floor/{p}", "<=", 1.15)
    for p in "abc":
        target(f"compiled / NumPyro jitted step ({p})", f"quivers_compiled/{p}", f"numpyro/{p}", "<=", 1.0)
    for p in "abc":
        target(f"compiled / Pyro JIT ({p})", f"quivers_compiled/{p}", f"pyro_jit/{p}", "<=", 0.25)
    for key, what in (("compile_cold/a", "empty on-disk caches"), ("quivers_compiled/a", "warm on-disk caches")):
        r = results.get(key)
        if r is not None and r.get("compile_s") is not None:
            targets.append({"target": f"first compiled step's extra time (a), {what}, s",
                            "ratio": round(r["compile_s"], 2), "bound": "<= 1", "met": r["compile_s"] <= 1})
    target("IAF step / MVN step, recommended setting", "recommended/AutoIAFNormal",
           "recommended/AutoMultivariateNormal", "<=", 2)
    target("BNAF step / MVN step, recommended setting (reported)", "recommended/AutoBNAFNormal",
           "recommended/AutoMultivariateNormal", "<=", 2)
    # earlier issues' targets, kept as regression checks
    for p in "abc":
        target(f"Pyro Trace_ELBO / eager ({p})", f"pyro/{p}", f"quivers/{p}", ">=", 3)
    target("(c) 500k rows / 50k rows", "quivers/c/500k", "quivers/c", "<=", 1.1)
    target("(b) 64 particles / 1", "quivers/b/64particles", "quivers/b", "<=", 4)
    target("Trainer.fit / SVI step (b)", "trainer/b", "quivers/b", "<=", 2)
    for p in "abc":
        a, b = ms(f"quivers/{p}"), ms(f"quivers_novalid/{p}")
        if a is not None and b is not None:
            targets.append({"target": f"validation cost ({p}), ms per step", "ratio": round(a - b, 3),
                            "bound": "reported", "met": None})
    lines += ["", "| target | measured | bound | met |", "|---|---|---|---|"]
    for t in targets:
        met = "-" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['ratio']} | {t['bound']} | {met} |")
    extras = [k for k in results if k.count("/") == 2 or k.startswith(("trainer", "recommended"))]
    if extras:
        lines += ["", "| extra run | ms per step |", "|---|---|"]
        lines += [f"| {k} | {ms(k):.3f} |" if ms(k) is not None else f"| {k} | failed |" for k in extras]
    return {"table": "\n".join(lines), "targets": targets}


if __name__ == "__main__":
    main()
