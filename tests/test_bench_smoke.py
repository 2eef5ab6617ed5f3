"""Smoke run of the speed benchmark's torch systems (the full run is `make bench`)."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_speed_benchmark_quick_run(tmp_path):
    out, md = tmp_path / "speed.json", tmp_path / "speed.md"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--only", "floor,quivers",
                        "--problems", "a,c", "--out", str(out), "--markdown", str(md)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    for key in ["floor/a", "quivers/a", "floor/c", "quivers/c"]:
        assert res["results"][key]["ms"] > 0, key
    assert any(t["target"] == "eager / floor (a)" for t in res["targets"])
    assert "| quivers |" in md.read_text()


def test_enumeration_benchmark_quick_run():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "enum_speed.py"), "--quick", "--only", "quivers",
                        "--lengths", "50,100"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| (d) mixture, K=5, N=10,000 |" in r.stdout and "| (e) HMM, K=5, T=100 |" in r.stdout
    assert "failed" not in r.stdout
