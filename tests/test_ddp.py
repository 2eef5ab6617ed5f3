"""Global data size under multi-device training: two CPU processes (DDP, gloo) take the
same SGD step as one process on the full batch."""

import os
import pathlib
import subprocess
import sys

import torch

from quivers.guides import AutoDeltaGuide, init_to_feasible
from quivers.models import BayesianLinearRegression

SCRIPT = pathlib.Path(__file__).with_name("ddp_one_step.py")


def _run(devices, out):
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parent)}
    r = subprocess.run([sys.executable, str(SCRIPT), str(devices), str(out)], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    return torch.load(out)


def test_two_cpu_processes_equal_one_full_batch_step(tmp_path):
    one = _run(1, tmp_path / "one.pt")
    two = _run(2, tmp_path / "two.pt")
    start = AutoDeltaGuide(BayesianLinearRegression(10), init_loc_fn=init_to_feasible).state_dict()
    moved = max((one[k] - start[k]).abs().max().item() for k in one)
    assert moved > 1e-3  # the step did something, so equality below is not vacuous
    for k in one:
        # each rank scales its half by N / (N/2); DDP averages the two gradients, which
        # equals the full-batch gradient up to float32 summation order (~1e-7 relative)
        assert torch.allclose(one[k], two[k], atol=1e-5, rtol=0), (k, (one[k] - two[k]).abs().max())
