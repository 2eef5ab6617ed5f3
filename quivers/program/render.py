"""``render_model``: a program's graph (sites, dependencies, plates) with graphviz (Pyro's
``pyro.render_model``)."""

from __future__ import annotations

import pathlib
import shutil
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError
from .reparam import unwrap_independent
from .steps import Deterministic, Factor, Latent, Observed, Param

if TYPE_CHECKING:
    import graphviz

    from .program import MonadicProgram

__all__ = ["render_model", "save_graph"]

_FORMATS = ("svg", "png", "pdf", "dot")
INSTALL_HINT = "install Graphviz's dot program (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz)"


def render_model(model: MonadicProgram, batch: Mapping[str, Any] | None = None,
                 filename: str | pathlib.Path | None = None, render_distributions: bool = False,
                 render_params: bool = False, render_deterministic: bool = True) -> graphviz.Digraph:
    """The model's graph as a ``graphviz.Digraph`` (Pyro's ``render_model``), optionally
    written to a file.

    Latent sites are white ellipses, observed sites grey ones, deterministic sites dashed
    ellipses, factors boxes and ``Param`` values plain text; an arrow ``a -> b`` says that
    ``b``'s step function reads ``a``; each plate is a box labelled with its name and size
    around the sites in it (nested in declaration order of the plates' dims).

    Parameters
    ----------
    model : MonadicProgram
        The model.
    batch : mapping, optional
        Data, only read when ``render_distributions`` (the observed sites' distributions
        need it; without it they are drawn from the model).
    filename : str or path, optional
        Where to write the graph; the suffix picks the format (``.svg``, ``.png``,
        ``.pdf``, or ``.dot`` for the Graphviz source). When Graphviz's ``dot`` program
        is missing, the source is written next to it as ``<stem>.dot`` and a warning
        says how to install ``dot``.
    render_distributions : bool
        Label each sampled site with its distribution (``tau ~ HalfCauchy``), from one
        run of the model under ``torch.no_grad``.
    render_params : bool
        Show ``Param`` sites and their arrows.
    render_deterministic : bool
        Show deterministic sites (hidden, their inputs point straight at their readers).

    Returns
    -------
    graphviz.Digraph
        Also available as ``.source`` (DOT text) without the ``dot`` program.

    Raises
    ------
    ConfigError
        If ``filename`` has a suffix other than those above.
    """
    import graphviz

    if filename is not None:
        _format(filename)
    steps = model._steps
    hidden = (() if render_params else (Param,)) + (() if render_deterministic else (Deterministic,))
    shown = {n: s for n, s in steps.items() if not isinstance(s, hidden)}
    labels = _distribution_labels(model, batch) if render_distributions else {}

    def parents(name: str) -> list[str]:  # the shown sites a step reads, through hidden ones
        out: list[str] = []
        for d in steps[name].deps:
            if d not in steps:
                continue
            for p in ([d] if d in shown else parents(d) if not isinstance(steps[d], Param) else []):
                if p not in out:
                    out.append(p)
        return out

    g = graphviz.Digraph(name=type(model).__name__)
    clusters: dict[tuple[str, ...], list[str]] = {}
    for name, step in shown.items():
        plates = tuple(p.name for p in sorted(step.plates, key=lambda p: model.plate_dim(p.name)))
        clusters.setdefault(plates, []).append(name)
    _nest(g, model, clusters, (), shown, labels)
    for name in shown:
        for p in parents(name):
            g.edge(p, name)
    if filename is not None:
        save_graph(g, filename)
    return g


def _node(g: Any, name: str, step: Any, labels: Mapping[str, str]) -> None:
    label = labels.get(name, name)
    if isinstance(step, Observed):
        g.node(name, label, shape="ellipse", style="filled", fillcolor="lightgrey")
    elif isinstance(step, Latent):
        g.node(name, label, shape="ellipse")
    elif isinstance(step, Deterministic):
        g.node(name, label, shape="ellipse", style="dashed")
    elif isinstance(step, Factor):
        g.node(name, label, shape="box")
    else:  # Param
        g.node(name, label, shape="plain")


def _nest(g: Any, model: Any, clusters: Mapping[tuple[str, ...], list[str]], prefix: tuple[str, ...],
          shown: Mapping[str, Any], labels: Mapping[str, str]) -> None:
    """Sites whose plates are exactly ``prefix`` here; one cluster per next plate."""
    for name in clusters.get(prefix, []):
        _node(g, name, shown[name], labels)
    inner = sorted({k[len(prefix)] for k in clusters if len(k) > len(prefix) and k[:len(prefix)] == prefix},
                   key=model.plate_dim)
    for plate in inner:
        p = model.plates[plate]
        with g.subgraph(name="cluster_" + "__".join((*prefix, plate))) as sub:
            size = "" if p.size is None else f" ({p.size})"
            sub.attr(label=f"{plate}{size}", labeljust="r", labelloc="b")
            _nest(sub, model, clusters, (*prefix, plate), shown, labels)


def _distribution_labels(model: Any, batch: Mapping[str, Any] | None) -> dict[str, str]:
    """``name ~ Distribution`` of every sampled site, from one run of the model."""
    with torch.no_grad():
        tr = model.trace(batch, sample_latent=True, sample_observed=True)
    out = {}
    for name, site in tr.items():
        d = getattr(site, "fn", None)
        if d is not None:
            out[name] = f"{name} ~ {type(unwrap_independent(d)[0]).__name__}"
    return out


def _format(filename: str | pathlib.Path) -> str:
    fmt = pathlib.Path(filename).suffix.lstrip(".").lower()
    if fmt not in _FORMATS:
        raise ConfigError(f"render_model: filename {str(filename)!r} must end in one of "
                          f"{', '.join('.' + f for f in _FORMATS)}")
    return fmt


def save_graph(graph: graphviz.Digraph, filename: str | pathlib.Path) -> pathlib.Path:
    """Write a graph from :func:`render_model` to ``filename`` (format from the suffix, as
    there); without Graphviz's ``dot`` program, its source as ``<stem>.dot`` and a warning
    that says how to install ``dot``.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    ConfigError
        If the suffix is not ``.svg``, ``.png``, ``.pdf`` or ``.dot``.
    """
    fmt = _format(filename)
    path = pathlib.Path(filename)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dot":
        path.write_text(graph.source)
        return path
    if shutil.which("dot") is None:
        dot = path.with_suffix(".dot")
        dot.write_text(graph.source)
        warnings.warn(f"render_model: Graphviz's dot program was not found, so {path.name} was not made; wrote the "
                      f"graph's source to {dot} instead ({INSTALL_HINT}; then: dot -T{fmt} {dot} -o {path})",
                      stacklevel=2)
        return dot
    path.write_bytes(graph.pipe(format=fmt))
    return path
