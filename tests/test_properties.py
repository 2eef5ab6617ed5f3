"""Property tests (hypothesis) for the latent registry and every support's ``biject_to``.

For each support ``torch.distributions`` offers a latent site (real, positive,
greater_than, interval, unit_interval, simplex, lower_cholesky, corr_cholesky,
positive_definite) and quivers' ``ordered_vector``, over random sizes, bounds and
unconstrained points:

* ``biject_to(support)(u)`` lies in the support, and ``inv`` brings it back to ``u``;
* ``log_abs_det_jacobian`` equals ``log|det J|`` of the autograd Jacobian, taken on the
  free coordinates of the constrained value (all but the last simplex entry; the lower
  triangle of a Cholesky factor or a symmetric matrix; the strict lower triangle of a
  correlation Cholesky factor), so that ``J`` is square;
* a registry built from random models packs and unpacks any values bitwise, and
  ``constrain``/``unconstrain`` are inverse, with any sample shape and plate layout.

Everything runs in float64. Tolerances: the round trips go through ``exp``/``log``,
``sigmoid``/``logit`` and a Cholesky factorisation, each of which loses a few ulps per
step, amplified by at most the condition number of the map; with unconstrained entries
in [-3, 3] that stays below 1e-9 relative, so ``rtol=1e-7, atol=1e-9`` leaves room while
catching any wrong formula (those err by O(1)). The same holds for ``log|det J|``
(autograd and the closed form agree to ~1e-12 in float64).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import distributions as dist
from torch.autograd.functional import jacobian
from torch.distributions import biject_to, constraints

from quivers import Latent, MonadicProgram, Plate
from quivers.constraints import OrderedTransform, VectorToLowerCholeskyTransform, ordered_vector
from quivers.guides import LatentRegistry

RTOL, ATOL = 1e-7, 1e-9
EXAMPLES = 200  # per test; `pytest --hypothesis-show-statistics` reports how many ran
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

entries = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False)
bounds = st.floats(-5.0, 5.0, allow_nan=False, allow_infinity=False)


def vectors(n: int) -> st.SearchStrategy[torch.Tensor]:
    return st.lists(entries, min_size=n, max_size=n).map(lambda v: torch.tensor(v, dtype=torch.float64))


def _strict_lower(y: torch.Tensor) -> torch.Tensor:
    n = y.shape[-1]
    r, c = torch.tril_indices(n, n, -1)
    return y[..., r, c]


def _lower(y: torch.Tensor) -> torch.Tensor:
    n = y.shape[-1]
    r, c = torch.tril_indices(n, n)
    return y[..., r, c]


# support name -> (strategy of (constraint, unconstrained point), free coordinates of y)
SUPPORTS: dict[str, tuple[st.SearchStrategy, Callable[[torch.Tensor], torch.Tensor]]] = {
    "real": (st.integers(1, 4).flatmap(lambda n: vectors(n).map(lambda u: (constraints.real, u))), lambda y: y),
    "positive": (st.integers(1, 4).flatmap(lambda n: vectors(n).map(lambda u: (constraints.positive, u))),
                 lambda y: y),
    "greater_than": (st.tuples(bounds, st.integers(1, 4)).flatmap(
        lambda b: vectors(b[1]).map(lambda u: (constraints.greater_than(b[0]), u))), lambda y: y),
    "interval": (st.tuples(bounds, st.floats(0.1, 10.0), st.integers(1, 4)).flatmap(
        lambda b: vectors(b[2]).map(lambda u: (constraints.interval(b[0], b[0] + b[1]), u))), lambda y: y),
    "unit_interval": (st.integers(1, 4).flatmap(lambda n: vectors(n).map(lambda u: (constraints.unit_interval, u))),
                      lambda y: y),
    "simplex": (st.integers(2, 6).flatmap(lambda k: vectors(k - 1).map(lambda u: (constraints.simplex, u))),
                lambda y: y[..., :-1]),
    "ordered_vector": (st.integers(1, 6).flatmap(lambda n: vectors(n).map(lambda u: (ordered_vector, u))),
                       lambda y: y),
    "lower_cholesky": (st.integers(1, 4).flatmap(
        lambda n: vectors(n * (n + 1) // 2).map(lambda u: (constraints.lower_cholesky, u))), _lower),
    "corr_cholesky": (st.integers(2, 5).flatmap(
        lambda n: vectors(n * (n - 1) // 2).map(lambda u: (constraints.corr_cholesky, u))), _strict_lower),
    "positive_definite": (st.integers(1, 4).flatmap(
        lambda n: vectors(n * (n + 1) // 2).map(lambda u: (constraints.positive_definite, u))), _lower),
}


@pytest.mark.parametrize("name", list(SUPPORTS))
@PROPERTY
@given(data=st.data())
def test_biject_to_round_trip_and_log_det_jacobian(name, data):
    strategy, free = SUPPORTS[name]
    support, u = data.draw(strategy)
    t = biject_to(support)
    y = t(u)
    assert bool(support.check(y).all()), f"{name}: {y} outside {support}"
    assert torch.allclose(t.inv(y), u, rtol=RTOL, atol=ATOL)
    J = jacobian(lambda v: free(t(v)).reshape(-1), u)
    assert J.shape[0] == J.shape[1] == u.numel()
    want = torch.linalg.slogdet(J)[1]
    got = t.log_abs_det_jacobian(u, y).sum()  # elementwise transforms give one term per entry
    assert torch.allclose(got, want, rtol=RTOL, atol=1e-8), f"{name}: {got} vs autograd {want}"


def test_ordered_transform_is_what_biject_to_gives():
    assert isinstance(biject_to(ordered_vector), OrderedTransform)


# ----------------------------------------------------------------------------- the registry
def _prior(kind: str, n: int) -> dist.Distribution:
    """A prior over ``kind``'s support with event size ``n`` (ignored by scalar kinds)."""
    if kind == "real":
        return dist.Normal(0.0, 1.0)
    if kind == "positive":
        return dist.Gamma(2.0, 1.0)
    if kind == "greater_than":
        return dist.Pareto(1.5, 3.0)
    if kind == "interval":
        return dist.Uniform(-1.0, 2.0)
    if kind == "unit_interval":
        return dist.Beta(2.0, 2.0)
    if kind == "lower_cholesky":
        base = dist.Independent(dist.Normal(torch.zeros(n * (n + 1) // 2), 1.0), 1)
        return dist.TransformedDistribution(base, VectorToLowerCholeskyTransform())
    if kind == "simplex":
        return dist.Dirichlet(torch.ones(n + 1))
    if kind == "corr_cholesky":
        return dist.LKJCholesky(n + 1, 1.0)
    if kind == "positive_definite":
        return dist.Wishart(df=torch.tensor(n + 3.0), covariance_matrix=torch.eye(n))
    if kind == "ordered_vector":
        base = dist.Independent(dist.Normal(torch.zeros(n + 1), 1.0), 1)
        return dist.TransformedDistribution(base, OrderedTransform())
    raise AssertionError(kind)


KINDS = ["real", "positive", "greater_than", "interval", "unit_interval", "simplex", "ordered_vector",
         "lower_cholesky", "corr_cholesky", "positive_definite"]
site_specs = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(1, 3), st.booleans()), min_size=1, max_size=5)


def _model(specs: list[tuple[str, int, bool]], plate_size: int) -> MonadicProgram:
    plate = Plate("p", size=plate_size)

    class Random(MonadicProgram):
        def __init__(self) -> None:
            super().__init__()
            self.declare(*[
                Latent(f"s{i}", (lambda kind=kind, n=n: _prior(kind, n)), plate=plate if plated else None)
                for i, (kind, n, plated) in enumerate(specs)
            ])

    return Random()


@pytest.mark.filterwarnings("ignore:Singular sample detected")  # from the Wishart prior's own draw
@PROPERTY
@given(site_specs, st.integers(1, 3), st.lists(st.integers(1, 3), max_size=2), st.integers(0, 2**31 - 1))
def test_registry_pack_unpack_and_constrain_round_trip(specs, plate_size, sample_shape, seed):
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        reg = LatentRegistry(_model(specs, plate_size))
        ss = torch.Size(sample_shape)
        gen = torch.Generator().manual_seed(seed)
        flat = (torch.rand(ss + (reg.size,), generator=gen, dtype=torch.float64) * 6 - 3)
        parts = reg.unpack(flat)
        assert sum(v[(0,) * len(ss)].numel() for v in parts.values()) == reg.size
        for site in reg:
            assert parts[site.name].shape == ss + site.unconstrained_shape
        assert torch.equal(reg.pack(parts, ss), flat)  # bitwise: packing only moves numbers
        values, ladj = reg.constrain(parts, {}, ss)
        back, _ = reg.unconstrain(values, {})
        for site in reg:
            x, u = values[site.name], parts[site.name]
            assert x.shape == ss + site.shape
            if site.is_real:  # the identity: no Jacobian term
                assert site.name not in ladj and torch.equal(x, u)
            else:
                assert ladj[site.name].shape == ss
            assert bool(site.support.check(x).all())
            assert torch.allclose(back[site.name], u, rtol=RTOL, atol=ATOL)
            assert torch.isfinite(site.prior.log_prob(x)).all()
    finally:
        torch.set_default_dtype(old)


def test_vector_to_lower_cholesky_rejects_a_non_triangular_length():
    with pytest.raises(ValueError, match="not the lower triangle"):
        biject_to(constraints.lower_cholesky)(torch.zeros(4))
    assert math.isclose(float(biject_to(constraints.positive_definite).log_abs_det_jacobian(
        torch.zeros(1), torch.ones(1, 1))), math.log(2.0), rel_tol=1e-6)  # y = exp(x)^2: dy/dx = 2 at x = 0
