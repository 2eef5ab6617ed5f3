"""The latent registry: flat packing and log|det J| of the biject_to transforms."""

import pytest
import torch
from torch import distributions as dist
from torch import nn
from torch.autograd.functional import jacobian

from quivers import Latent, MonadicProgram, Observed, Plate
from quivers.guides import AutoNormalGuide, LatentRegistry
from quivers.infer import SVI, Trace_ELBO


class Mixed(MonadicProgram):
    def __init__(self):
        super().__init__()
        p = Plate("p", size=4)
        self.declare(
            Latent("a", lambda: dist.Normal(0.0, 1.0)),
            Latent("b", lambda: dist.Gamma(2.0, 1.0), plate=p),
            Latent("c", lambda: dist.Dirichlet(torch.ones(3))),
            Latent("L", lambda: dist.LKJCholesky(3, 1.0)),
            Latent("u", lambda: dist.Uniform(-1.0, 2.0)),
        )


def test_pack_unpack_round_trip_and_layout():
    reg = LatentRegistry(Mixed())
    assert reg.names == ["a", "b", "c", "L", "u"]
    # unconstrained sizes: a 1, b 4, c 2 (stick-breaking), L 3 (3x3 corr Cholesky), u 1
    assert [reg[n].numel for n in reg.names] == [1, 4, 2, 3, 1] and reg.size == 11
    flat = torch.randn(5, 11)
    parts = reg.unpack(flat)
    assert parts["b"].shape == (5, 4) and parts["L"].shape == (5, 1, 3)
    assert torch.equal(reg.pack(parts, torch.Size([5])), flat)


@pytest.mark.parametrize("name", ["b", "c", "L", "u"])
def test_log_abs_det_jacobian_matches_autograd(name):
    reg = LatentRegistry(Mixed())
    site = reg[name]
    u = torch.randn(site.unconstrained_shape, dtype=torch.float64)
    x, ladj = reg.constrain({n: torch.zeros(reg[n].unconstrained_shape, dtype=torch.float64) for n in reg.names}
                            | {name: u}, {}, torch.Size())
    x, ladj = x[name], ladj[name]
    if name in ("c", "L"):
        # maps to a manifold: compare with the volume factor sqrt(det(J^T J)) computed on
        # the free coordinates (all but the last simplex coordinate; the strict lower triangle)
        def free(v):
            y = site.transform(v.reshape(site.unconstrained_shape))
            return y[..., :-1].reshape(-1) if name == "c" else y[0][torch.tril_indices(3, 3, -1).unbind()]
        J = jacobian(free, u.reshape(-1))
        want = torch.linalg.slogdet(J)[1] if J.shape[0] == J.shape[1] else 0.5 * torch.logdet(J.T @ J)
    else:
        J = jacobian(lambda v: site.transform(v).reshape(-1), u)
        want = torch.linalg.slogdet(J.reshape(x.numel(), u.numel()))[1]
    assert torch.allclose(ladj, want, atol=1e-8)


class Decoder(MonadicProgram):
    """A VAE-style decoder: local z_i, observed x_i = net(z_i) + noise; the network's
    weights are the model's own parameters."""

    def __init__(self, n):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 2))
        data = Plate("data", size=n)
        self.declare(
            Latent("z", lambda: dist.Independent(dist.Normal(torch.zeros(1), 1.0), 1), plate=data),
            Observed("x", lambda z: dist.Independent(dist.Normal(self.net(z), 0.1), 1), plate=data),
        )


def test_program_submodules_train_with_the_guide():
    n = 64
    t = torch.linspace(-2, 2, n).unsqueeze(-1)
    x = torch.cat([t, t.square() / 2], -1)
    model = Decoder(n)
    guide = AutoNormalGuide(model)
    before = [p.detach().clone() for p in model.net.parameters()]
    svi = SVI(model, guide, torch.optim.Adam(guide.parameters(), lr=0.02), Trace_ELBO())  # net added by SVI
    losses = [svi.step({"x": x}) for _ in range(600)]
    assert any(not torch.equal(a, b) for a, b in zip(before, model.net.parameters(), strict=True))
    assert sum(losses[-50:]) / 50 < 0.2 * sum(losses[:50]) / 50
