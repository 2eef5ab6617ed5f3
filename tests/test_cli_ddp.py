"""The CLI under DDP: two CPU processes fit and predict through ``python -m quivers.lightning.cli``
(LightningCLI relaunches the command once per extra rank)."""

import os
import pathlib
import subprocess
import sys

import torch
import yaml

from quivers.datasets import EIGHT_SCHOOLS_SIGMA

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _cli(cwd, *args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("QUIVERS_RUN_DIR", None)
    r = subprocess.run([sys.executable, "-m", "quivers.lightning.cli", *args], cwd=cwd, capture_output=True,
                       text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    return r.stdout


def test_fit_and_predict_on_two_cpu_processes(tmp_path):
    cfg = yaml.safe_load((ROOT / "configs" / "eight_schools.yaml").read_text())
    cfg["trainer"] = {"max_steps": 40, "devices": 2, "accelerator": "cpu", "strategy": "ddp", "logger": False,
                      "enable_progress_bar": False, "enable_model_summary": False}
    cfg["data"]["init_args"]["steps_per_epoch"] = 1  # the 8 rows split 4 + 4 across the ranks
    cfg["model"]["num_predict_samples"] = 2000
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))

    out = _cli(tmp_path, "fit", "--config", "cfg.yaml", "--summary_samples", "200")
    assert out.count("Posterior summary") == 1  # rank 0 alone writes and prints it
    runs = tmp_path / "runs" / "quivers"  # --trainer.logger false: a fresh folder, shared by both ranks
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml", "runs"]  # nothing in the working dir
    run = runs / "version_0"
    assert (run / "posterior_summary.csv").exists() and (run / "config.yaml").exists()
    ckpt = next((run / "checkpoints").glob("*.ckpt"))

    out = _cli(tmp_path, "predict", "--config", "cfg.yaml", "--ckpt_path", str(ckpt))
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1"]
    pred = torch.load(runs / "version_1" / "predictions.pt")
    assert pred["y"].shape == (2000, 8) and pred["theta"].shape == (2000, 8)
    # y_j = theta_j + sigma_j * noise, so the sd of y - theta is school j's sigma where the
    # gathered rows are in data order, each once (a permutation would put 9 where 18 is
    # expected). The sd of 2000 draws has a relative standard error of 1/sqrt(4000) = 1.6%;
    # 8% is five of them.
    sd = (pred["y"] - pred["theta"]).std(0)
    sigma = torch.tensor(EIGHT_SCHOOLS_SIGMA)
    assert torch.allclose(sd, sigma, rtol=0.08), (sd, sigma)
