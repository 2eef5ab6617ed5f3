"""Discrete Markov chains along a plate: the ``Markov`` step and its distribution.

A chain ``z_0 ~ init``, ``z_t ~ transition(z_{t-1})`` along a plate (time) is one latent
site whose value has the plate's length along the plate's dimension, like any plated
site. Under :class:`~quivers.infer.TraceEnum_ELBO` it is summed out by the forward
algorithm in ``O(T K^2)`` (vectorised over time as a parallel scan of ``K x K``
log-matrix products), not ``K^T``; outside enumeration (prior draws, ``Predictive``,
a guide that samples it) it is the :class:`MarkovChain` distribution.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch.distributions import Distribution

from ..errors import ModelSpecError
from .plate import Plate
from .steps import Latent, PlateArg, _dependencies, _plates

__all__ = ["Markov", "MarkovChain"]

PREV = "prev"


class MarkovChain(Distribution):
    """A discrete Markov chain along batch dimension ``dim``: ``z_0 ~ init``,
    ``z_t ~ transition(z_{t-1})`` for ``t = 1 .. length - 1``.

    Parameters
    ----------
    init : Distribution
        The first state's distribution (discrete, ``event_shape == ()``); its batch shape
        broadcasts to the chain's (only ``t = 0`` is used).
    transition : callable
        ``transition(prev) -> Distribution``: the distribution of the states given the
        previous ones, ``prev`` of the chain's shape (element ``t`` holds ``z_{t-1}``;
        only ``t >= 1`` is used). It may vary along the chain (time-varying transitions).
    length : int
        ``T``, the chain's length along ``dim``.
    dim : int
        The (negative) batch dimension the chain runs along.

    Notes
    -----
    ``log_prob(z)`` has the chain's batch shape: element ``t`` is ``log p(z_t | z_{t-1})``
    (``log p(z_0)`` at ``t = 0``). ``sample`` draws the states one step at a time.
    """

    arg_constraints: dict[str, Any] = {}
    has_rsample = False

    def __init__(self, init: Distribution, transition: Callable[[torch.Tensor], Distribution], length: int,
                 dim: int, validate_args: bool | None = None) -> None:
        if init.event_shape:
            raise ModelSpecError(f"MarkovChain: the init distribution's event_shape must be (), got "
                                 f"{tuple(init.event_shape)}")
        self.init, self.transition, self.length, self.dim = init, transition, int(length), int(dim)
        along = torch.Size((self.length,) + (1,) * (-self.dim - 1))
        super().__init__(torch.broadcast_shapes(init.batch_shape, along), validate_args=False)

    @property
    def support(self) -> Any:  # type: ignore[override]
        return self.init.support

    def expand(self, batch_shape: torch.Size, _instance: Any = None) -> MarkovChain:
        new = self._get_checked_instance(MarkovChain, _instance)
        new.init, new.transition, new.length, new.dim = self.init, self.transition, self.length, self.dim
        super(MarkovChain, new).__init__(torch.Size(batch_shape), validate_args=False)
        return new

    def _first_mask(self, device: torch.device) -> torch.Tensor:
        t = torch.arange(self.length, device=device)
        return (t == 0).reshape((self.length,) + (1,) * (-self.dim - 1))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        d = self.dim
        prev = torch.cat([value.narrow(d, 0, 1), value.narrow(d, 0, self.length - 1)], d)
        lp = self.transition(prev).log_prob(value)
        return torch.where(self._first_mask(value.device), self.init.log_prob(value), lp)

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        d = self.dim
        first = self.init.expand(torch.broadcast_shapes(self.init.batch_shape, shape)).sample()
        states = [first.narrow(d, 0, 1).expand(shape[: len(shape) + d] + (1,) + shape[len(shape) + d + 1:])]
        for t in range(1, self.length):
            step = self.transition(states[-1])
            draw = step.sample()
            if draw.shape[d] == self.length:
                draw = draw.narrow(d, t, 1)
            states.append(draw.expand(states[0].shape))
        return torch.cat(states, d)


class Markov(Latent):
    """A discrete Markov chain of latent states along a plate (Pyro's ``markov``, the
    hidden chain of ``DiscreteHMM``).

    ``z_0 ~ init(...)`` and ``z_t ~ transition(prev=z_{t-1}, ...)`` for each position
    ``t`` of plate ``along``. The site's value has the plate's length along its dimension
    (trace layout, like any plated site), so emissions are ordinary steps in the same
    plate that depend on ``name``. It is always enumerated
    (``enumerate="parallel"``): :class:`~quivers.infer.TraceEnum_ELBO` sums it out with
    the forward algorithm at cost ``O(T K^2)``, and
    :func:`~quivers.infer.infer_discrete` recovers it (Viterbi or forward-filter
    backward-sample).

    Parameters
    ----------
    name : str
        Site name.
    init : callable
        Step function of the first state's distribution (discrete with
        ``enumerate_support``, ``event_shape == ()``); its parameter names are its
        dependencies, as for any step.
    transition : callable
        Step function of the transition, with a parameter named ``prev`` that receives the
        previous states (a ``LongTensor`` or float tensor of the support's values, shape
        broadcasting along the chain). Its other parameters are dependencies.
        Index a table of transition probabilities with :func:`~quivers.program.vindex`,
        for example ``lambda prev, trans: Categorical(probs=vindex(trans, prev, event_dim=1))``.
    plate : Plate or sequence of Plate
        The site's plates; they include ``along``.
    along : Plate, optional
        The plate the chain runs along; may be left out when ``plate`` is a single plate.

    Raises
    ------
    ModelSpecError
        If ``transition`` has no ``prev`` parameter, ``along`` is missing, ambiguous or
        not among the site's plates, or ``along`` is subsampled (a chain needs every
        position).
    """

    def __init__(self, name: str, init: Callable[..., Distribution], transition: Callable[..., Distribution],
                 plate: PlateArg, along: Plate | None = None) -> None:
        plates = _plates(name, plate)
        if along is None:
            if len(plates) != 1:
                raise ModelSpecError(f"Markov site {name!r}: pass along=<plate> to say which of its plates "
                                     f"{[p.name for p in plates]} the chain runs along")
            along = plates[0]
        if along not in plates:
            raise ModelSpecError(f"Markov site {name!r}: along={along.name!r} is not among its plates "
                                 f"{[p.name for p in plates]}")
        if along.subsample_size is not None:
            raise ModelSpecError(f"Markov site {name!r}: plate {along.name!r} is subsampled; a Markov chain needs "
                                 "every position of the plate it runs along")
        init_deps, init_defaults = _dependencies(name, init)
        trans_deps, trans_defaults = _dependencies(name, transition)
        if PREV not in trans_deps:
            raise ModelSpecError(f"Markov site {name!r}: the transition function needs a parameter named "
                                 f"{PREV!r} (the previous states), got parameters {list(trans_deps)}")
        self.init_fn, self.transition_fn, self.along = init, transition, along
        self.init_deps = init_deps
        self.transition_deps = tuple(d for d in trans_deps if d != PREV)
        deps = tuple(dict.fromkeys(init_deps + self.transition_deps + (along.name,)))

        def chain(**kw: Any) -> MarkovChain:
            return self.chain(kw)

        chain.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(d, inspect.Parameter.KEYWORD_ONLY) for d in deps])
        super().__init__(name, chain, plates, enumerate="parallel")
        self.defaults = {**init_defaults, **{k: v for k, v in trans_defaults.items() if k != PREV}}
        self._dim: int | None = None  # the along plate's dim, set by the program at declare()

    def split(self, kw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Keyword arguments of ``init`` and of ``transition`` (without ``prev``)."""
        return ({d: kw[d] for d in self.init_deps if d in kw},
                {d: kw[d] for d in self.transition_deps if d in kw})

    def chain(self, kw: dict[str, Any]) -> MarkovChain:
        """The chain's distribution from the gathered dependencies ``kw``."""
        if self._dim is None:
            raise ModelSpecError(f"Markov site {self.name!r} is not declared in a program")
        init_kw, trans_kw = self.split(kw)
        length = int(torch.as_tensor(kw[self.along.name]).shape[0])
        if self.along.size is not None and length != self.along.size:
            raise ModelSpecError(f"Markov site {self.name!r}: the batch holds {length} of the {self.along.size} "
                                 f"positions of plate {self.along.name!r}; a Markov chain needs all of them")
        transition = self.transition_fn
        return MarkovChain(self.init_fn(**init_kw), lambda prev: transition(prev=prev, **trans_kw), length,
                           self._dim)
