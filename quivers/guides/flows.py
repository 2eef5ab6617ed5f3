"""Flow guides over the flat unconstrained latent vector: IAF, BNAF, and any user flow.

Each pushes a standard Normal ``eps`` through a flow ``f`` and then an elementwise affine map::

    u = loc + scale * f(eps),        z_site = biject_to(support)(u_site)

``loc`` starts at ``init_loc_fn`` and ``scale`` at ``init_scale`` (both learned), and ``f``
starts at (or near) the identity, so the initial guide is ``AutoDiagonalNormal``'s and the
flow's networks see inputs on the unit scale whatever the posterior's location and scale.
Sampling and its density are one forward pass (``log q(u) = log N(eps) - log|det J|``).
The autoregressive building blocks are zuko's (Rozet et al., zuko); BNAF is in
:mod:`quivers.guides.bnaf`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import AffineTransform, ComposeTransform, Transform

from ..errors import GuideError
from ..program import MonadicProgram
from ..validation import check_positive_int
from .bnaf import BlockNAF, BlockNAFTransform
from .continuous import AutoContinuous
from .guide import Batch
from .initialization import InitFn, check_init_scale, init_to_median
from .transforms import inv_softplus

__all__ = ["AutoIAFNormal", "AutoBNAFNormal", "AutoNormalizingFlow"]

TransformFactory = Callable[[int], nn.Module]


class _AutoFlow(AutoContinuous):
    """Shared part of the flow guides: the final affine map and the sampling-only helpers.

    Subclasses define :meth:`_flow` (the transforms ``f``, first applied first).
    :meth:`median` and :meth:`quantiles` are estimated from 1,000 draws (no closed form).
    """

    def __init__(
        self,
        model: MonadicProgram,
        observed_names: Sequence[str] | None,
        init_loc_fn: InitFn | str,
        init_scale: float,
    ) -> None:
        init_scale = check_init_scale(init_scale)
        super().__init__(model, observed_names, init_loc_fn)
        self.init_scale = float(init_scale)
        self.loc = nn.Parameter(self._init_loc())
        self.scale_raw = nn.Parameter(torch.full_like(self.loc, float(inv_softplus(self.init_scale))))

    def _flow(self) -> list[Transform]:
        raise NotImplementedError

    @torch.no_grad()
    def _set_moments(self, loc: torch.Tensor, cov: torch.Tensor) -> None:
        """Warm-start hook: the final affine map takes the mean and the marginal sds (with
        ``f`` at the identity, as the IAF starts, the guide is then the diagonal Laplace
        Gaussian; :func:`~quivers.guides.laplace_warm_start`)."""
        self.loc.copy_(loc)
        self.scale_raw.copy_(inv_softplus(cov.diagonal(dim1=-2, dim2=-1).sqrt()))

    def get_transform(self, batch: Batch = None) -> Transform:
        """``eps -> loc + scale * f(eps)`` (event dim 1)."""
        affine = AffineTransform(self.loc, F.softplus(self.scale_raw), event_dim=1)
        return ComposeTransform([*self._flow(), affine])


def _identity_start(lazy: nn.Module) -> None:
    """Zero a zuko transform's output layer so that it starts as the identity
    (``MonotonicAffineTransform`` with shift 0 and log-scale 0)."""
    with torch.no_grad():
        if hasattr(lazy, "hyper"):
            last = [m for m in lazy.hyper.modules() if isinstance(m, nn.Linear)][-1]
            last.weight.zero_()
            last.bias.zero_()
        for p in getattr(lazy, "phi", ()):
            p.zero_()


class _SkipHyper(nn.Module):
    """A MADE conditioner plus a masked linear skip connection from its input to its output."""

    def __init__(self, mlp: nn.Module, skip: nn.Module) -> None:
        super().__init__()
        self.mlp, self.skip = mlp, skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x) + self.skip(x)


class AutoIAFNormal(_AutoFlow):
    """Inverse autoregressive flow guide (Kingma et al. 2016; Pyro's and NumPyro's
    ``AutoIAFNormal``).

    ``f`` is ``num_flows`` affine autoregressive transforms, each
    ``y_i = exp(a_i(x_<i)) x_i + b_i(x_<i)`` with a masked MLP (MADE, Germain et al.
    2015) conditioner, alternating the variable order between flows. Built from zuko's
    ``MaskedAutoregressiveTransform`` used in its one-pass direction (as an IAF), each
    starting as the identity.

    Parameters
    ----------
    model : MonadicProgram
        The model.
    num_flows : int
        Number of autoregressive transforms (default 3).
    hidden_dims : sequence of int, optional
        Hidden layer widths of each conditioner; default ``(3D + 5, 3D + 5)`` for
        latent dimension ``D``.
    skip_connections : bool
        Add a masked linear map from each conditioner's input to its output.
    nonlinearity : type of nn.Module
        Activation class of the conditioners (default ``nn.ReLU``).
    observed_names : sequence of str, optional
        Sites left out of the guide.
    init_loc_fn : callable or str
        Init strategy for ``loc`` (default :func:`init_to_median`).
    init_scale : float
        Initial ``scale`` (default 0.1).

    Raises
    ------
    GuideError
        If ``num_flows < 1``, ``init_scale`` is not positive, or as :class:`AutoContinuous`.

    Notes
    -----
    With ``D = 1`` the first (only) coordinate has no predecessors, so each transform is
    an affine map with learned constants and the guide equals a Normal in unconstrained
    space (NumPyro raises instead). :meth:`log_prob` of a given value inverts the
    transforms (``D`` sequential passes each); the ELBO never needs it.
    """

    def __init__(
        self,
        model: MonadicProgram,
        num_flows: int = 3,
        hidden_dims: Sequence[int] | None = None,
        skip_connections: bool = False,
        nonlinearity: type[nn.Module] = nn.ReLU,
        observed_names: Sequence[str] | None = None,
        init_loc_fn: InitFn | str = init_to_median,
        init_scale: float = 0.1,
    ) -> None:
        from zuko.flows import MaskedAutoregressiveTransform
        from zuko.nn import MaskedLinear

        num_flows = check_positive_int(num_flows, "num_flows", GuideError)
        super().__init__(model, observed_names, init_loc_fn, init_scale)
        d = self.latent_dim
        hidden = tuple(hidden_dims) if hidden_dims is not None else (3 * d + 5, 3 * d + 5)
        self.flows = nn.ModuleList()
        for k in range(int(num_flows)):
            order = torch.arange(d) if k % 2 == 0 else torch.arange(d).flip(0)
            t = MaskedAutoregressiveTransform(d, order=order, hidden_features=hidden, activation=nonlinearity)
            if skip_connections and hasattr(t, "hyper"):
                adjacency = (t.order[:, None] > t.order).repeat_interleave(t.total, dim=0)
                t.hyper = _SkipHyper(t.hyper, MaskedLinear(adjacency))
                with torch.no_grad():
                    t.hyper.skip.weight.zero_()
                    t.hyper.skip.bias.zero_()
            _identity_start(t)
            self.flows.append(t.to(device=self.loc.device, dtype=self.loc.dtype))

    def _flow(self) -> list[Transform]:
        return [t() for t in self.flows]


class AutoBNAFNormal(_AutoFlow):
    """Block neural autoregressive flow guide (De Cao, Titov & Aziz 2019; Pyro's
    ``AutoBNAFNormal``).

    ``f`` is ``num_flows`` BNAFs (:class:`~quivers.guides.bnaf.BlockNAF`), alternating the
    variable order: each is a monotone neural network per coordinate given the earlier
    ones, a universal density approximator, with an exact one-pass log-determinant.

    Parameters
    ----------
    model : MonadicProgram
        The model.
    num_flows : int
        Number of stacked BNAFs (default 1).
    hidden_factors : sequence of int
        Hidden units per latent dimension of each layer (default ``(8, 8)``).
    observed_names : sequence of str, optional
        Sites left out of the guide.
    init_loc_fn : callable or str
        Init strategy for ``loc`` (default :func:`init_to_median`).
    init_scale : float
        Initial ``scale`` (default 0.1).

    Raises
    ------
    GuideError
        If ``num_flows < 1`` or ``hidden_factors`` is empty or not positive, or as
        :class:`AutoContinuous`.

    Notes
    -----
    BNAF has no analytic inverse, so :meth:`log_prob` of a given value raises
    ``NotImplementedError``; sampling, ``rsample_and_log_prob`` (what the ELBO uses),
    :meth:`median` and :meth:`quantiles` (by sampling) work. The initial flow is a random
    monotone network, not the identity.
    """

    def __init__(
        self,
        model: MonadicProgram,
        num_flows: int = 1,
        hidden_factors: Sequence[int] = (8, 8),
        observed_names: Sequence[str] | None = None,
        init_loc_fn: InitFn | str = init_to_median,
        init_scale: float = 0.1,
    ) -> None:
        num_flows = check_positive_int(num_flows, "num_flows", GuideError)
        if not hidden_factors or any(int(a) != a or a < 1 for a in hidden_factors):
            raise GuideError(f"hidden_factors must be positive integers, got {hidden_factors!r}")
        super().__init__(model, observed_names, init_loc_fn, init_scale)
        self.flows = nn.ModuleList(
            BlockNAF(self.latent_dim, hidden_factors).to(device=self.loc.device, dtype=self.loc.dtype)
            for _ in range(int(num_flows)))

    def _flow(self) -> list[Transform]:
        out: list[Transform] = []
        for k, flow in enumerate(self.flows):
            if k % 2 == 1:
                out.append(_Reverse())
            out.append(BlockNAFTransform(flow))
        return out


class _Reverse(Transform):
    """Reverse the last dimension (a volume-preserving permutation)."""

    domain = codomain = torch.distributions.constraints.independent(torch.distributions.constraints.real, 1)
    bijective = True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reverse)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.flip(-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[:-1])


class AutoNormalizingFlow(_AutoFlow):
    """A guide from any flow (Pyro's ``AutoNormalizingFlow``).

    ``init_transform_fn(latent_dim)`` builds the flow ``f``, either

    - a zuko lazy transform (``zuko.flows.LazyTransform``, for instance
      ``zuko.flows.NSF(D, transforms=3).transform``, a neural spline flow), called with no
      context to get the transform each time; or
    - a ``torch.distributions.Transform`` that is also an ``nn.Module`` (its parameters
      train).

    ``f`` acts on ``R^D`` with event dim 1, in the sampling direction; its inverse is only
    needed for :meth:`log_prob` of a given value.

    Parameters
    ----------
    model : MonadicProgram
        The model.
    init_transform_fn : callable
        ``f(latent_dim) -> nn.Module`` as above; pass a module-level function (or its
        import path) so checkpoints can rebuild the guide.
    observed_names : sequence of str, optional
        Sites left out of the guide.
    init_loc_fn : callable or str
        Init strategy for ``loc`` (default :func:`init_to_median`).
    init_scale : float
        Initial ``scale`` (default 0.1).

    Raises
    ------
    GuideError
        If ``init_transform_fn`` returns something else, or as :class:`AutoContinuous`.
    """

    def __init__(
        self,
        model: MonadicProgram,
        init_transform_fn: TransformFactory | str,
        observed_names: Sequence[str] | None = None,
        init_loc_fn: InitFn | str = init_to_median,
        init_scale: float = 0.1,
    ) -> None:
        from zuko.flows import LazyTransform

        if isinstance(init_transform_fn, str):
            from ..trust import resolve_path

            init_transform_fn = resolve_path(init_transform_fn, "AutoNormalizingFlow's init_transform_fn")
        super().__init__(model, observed_names, init_loc_fn, init_scale)
        flow = init_transform_fn(self.latent_dim)
        self._lazy = isinstance(flow, LazyTransform)
        if not (self._lazy or (isinstance(flow, Transform) and isinstance(flow, nn.Module))):
            raise GuideError(
                f"init_transform_fn must return a zuko LazyTransform or a torch.distributions.Transform that is an "
                f"nn.Module, got {type(flow).__name__}")
        self.flow = flow.to(device=self.loc.device, dtype=self.loc.dtype)

    def _flow(self) -> list[Transform]:
        return [self.flow() if self._lazy else self.flow]
