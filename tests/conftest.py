import pathlib

import pytest
import torch

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
