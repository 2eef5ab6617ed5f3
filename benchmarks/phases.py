"""Where an eager SVI step's time goes: ms per phase, eight schools, AutoNormalGuide, 1 particle.

usage: python benchmarks/phases.py   (one thread; 300 warm-up steps, then 3,000 timed)
"""

from __future__ import annotations

import time

import torch

from quivers.datasets.real import EIGHT_SCHOOLS_SIGMA, EIGHT_SCHOOLS_Y
from quivers.guides import AutoNormalGuide
from quivers.models import EightSchools

PHASES = ("prepare", "guide", "trace", "log_joint", "backward", "adam")


def main(warm: int = 300, steps: int = 3000) -> dict[str, float]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = EightSchools()
    guide = AutoNormalGuide(model)
    opt = torch.optim.Adam(guide.parameters(), lr=0.01)
    data = {"y": torch.tensor(EIGHT_SCHOOLS_Y), "sigma": torch.tensor(EIGHT_SCHOOLS_SIGMA)}
    total = dict.fromkeys(PHASES, 0.0)
    for i in range(warm + steps):
        t = [time.perf_counter()]
        opt.zero_grad()
        batch = model.prepare(data)
        t.append(time.perf_counter())
        z, log_q = guide.rsample_and_log_prob(batch, (1,))
        t.append(time.perf_counter())
        tr = model.trace(batch, z, (1,))
        t.append(time.perf_counter())
        loss = -(tr.log_joint() - log_q).mean()
        t.append(time.perf_counter())
        loss.backward()
        t.append(time.perf_counter())
        opt.step()
        t.append(time.perf_counter())
        if i >= warm:
            for k, a, b in zip(PHASES, t[:-1], t[1:], strict=True):
                total[k] += b - a
    return {k: round(v / steps * 1e3, 3) for k, v in total.items()}


if __name__ == "__main__":
    print(main())
