"""One SGD step of SVIModule on the diabetes data, on 1 process (full batch) or on 2 CPU
processes with DDP (gloo; half the rows each). Run as a script: Lightning's ``ddp``
strategy re-launches this file for the second rank.

usage: python ddp_one_step.py DEVICES OUT.pt
"""

import sys

import lightning as L
import torch

from quivers.datasets import DiabetesData
from quivers.guides import AutoDeltaGuide, init_to_feasible
from quivers.lightning import SVIModule
from quivers.models import BayesianLinearRegression


def main(devices: int, out: str) -> None:
    L.seed_everything(0)
    model = BayesianLinearRegression(num_features=10)
    guide = AutoDeltaGuide(model, init_loc_fn=init_to_feasible)  # deterministic: no Monte Carlo noise
    module = SVIModule(model, guide, optimizer="torch.optim.SGD", lr=1e-4)
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", max_steps=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, DiabetesData())
    if trainer.is_global_zero:
        torch.save({k: v.detach().clone() for k, v in module.guide.state_dict().items()}, out)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
