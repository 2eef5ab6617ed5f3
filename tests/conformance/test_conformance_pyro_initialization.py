"""Pyro's ``tests/infer/test_initialization.py`` (pyro-ppl/pyro @ 13b27c5a), ported to quivers."""

import torch
from torch import distributions as dist

from quivers import Latent, MonadicProgram
from quivers.guides import AutoDelta, init_to_generated, init_to_value


class XYZ(MonadicProgram):
    def __init__(self):
        super().__init__()
        self.declare(*(Latent(n, lambda: dist.Normal(0.0, 1.0)) for n in ("x", "y", "z")))


def test_init_to_generated():
    """``generate`` runs once per guide construction (Pyro: once per model execution),
    and every site of that guide uses the strategy it returned; sites it does not name
    fall back to ``init_to_value``'s default."""

    class MockGenerate:
        def __init__(self):
            self.counter = 0

        def __call__(self):
            values = {"x": torch.tensor(self.counter + 0.0), "y": torch.tensor(self.counter + 0.5)}
            self.counter += 1
            return init_to_value(values=values)

    mock_generate = MockGenerate()
    model = XYZ()
    for i in range(5):
        median = AutoDelta(model, init_loc_fn=init_to_generated(generate=mock_generate)).median()
        assert float(median["x"]) == i
        assert float(median["y"]) == i + 0.5
    assert mock_generate.counter == 5
