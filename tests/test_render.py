"""``render_model``: the graph's nodes, arrows and plate boxes, and how it is written."""

from __future__ import annotations

import shutil

import graphviz
import pytest
import torch
import torch.distributions as dist

from quivers import Deterministic, Latent, MonadicProgram, Observed, Param, Plate, render_model
from quivers.errors import ConfigError
from quivers.models import EightSchools
from quivers.program import save_graph


def _lines(g):
    return {line.strip() for line in g.source.splitlines()}


def test_eight_schools_graph_has_sites_arrows_and_the_plate():
    g = render_model(EightSchools())
    lines = _lines(g)
    assert {"mu -> theta", "tau -> theta", "eta -> theta", "theta -> y"} <= lines
    assert "subgraph cluster_schools {" in lines and 'label="schools (8)" labeljust=r labelloc=b' in lines
    assert "y [label=y fillcolor=lightgrey shape=ellipse style=filled]" in lines  # observed: shaded
    assert "theta [label=theta shape=ellipse style=dashed]" in lines
    assert "mu [label=mu shape=ellipse]" in lines
    # mu and tau sit outside the plate box: before the cluster opens
    src = g.source
    assert src.index("mu [") < src.index("subgraph cluster_schools") < src.index("eta [")


def test_hidden_deterministic_sites_pass_their_inputs_through_and_params_show_on_request():
    class WithParam(MonadicProgram):
        def __init__(self):
            super().__init__()
            self.declare(Param("s", torch.tensor(1.0), dist.constraints.positive),
                         Latent("z", lambda s: dist.Normal(0.0, s)),
                         Deterministic("z2", lambda z: 2 * z),
                         Observed("y", lambda z2: dist.Normal(z2, 1.0)))

    lines = _lines(render_model(WithParam(), render_deterministic=False))
    assert "z -> y" in lines and not any(line.startswith("z2") for line in lines)
    assert not any(line.startswith("s ") or line.startswith("s ->") for line in lines)
    lines = _lines(render_model(WithParam(), render_params=True))
    assert "s -> z" in lines and "s [label=s shape=plain]" in lines


def test_distribution_labels_and_nested_plates():
    class Nested(MonadicProgram):
        def __init__(self):
            super().__init__()
            groups = Plate("groups", size=3, dim=-2)
            rows = Plate("rows", size=4, dim=-1)
            self.declare(Latent("g", lambda: dist.Normal(0.0, 1.0), plate=groups),
                         Observed("y", lambda g: dist.Normal(g, 1.0), plate=(rows, groups)))

    g = render_model(Nested(), render_distributions=True)
    lines = _lines(g)
    assert 'g [label="g ~ Normal" shape=ellipse]' in lines
    assert "subgraph cluster_groups {" in lines and "subgraph cluster_groups__rows {" in lines
    src = g.source  # the rows box sits inside the groups box
    assert src.index("subgraph cluster_groups {") < src.index("subgraph cluster_groups__rows {")


def test_save_graph_writes_the_format_or_the_source_with_an_install_hint(tmp_path, monkeypatch):
    g = render_model(EightSchools())
    assert save_graph(g, tmp_path / "m.dot").read_text() == g.source
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match=r"dot program was not found.*apt-get install graphviz"):
        written = save_graph(g, tmp_path / "model.svg")
    assert written == tmp_path / "model.dot" and written.read_text() == g.source
    assert not (tmp_path / "model.svg").exists()
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/dot")
    monkeypatch.setattr(graphviz.Digraph, "pipe", lambda self, format: f"<{format}/>".encode())
    assert render_model(EightSchools(), filename=tmp_path / "x.png") is not None
    assert (tmp_path / "x.png").read_bytes() == b"<png/>"
    with pytest.raises(ConfigError, match=r"must end in one of \.svg, \.png, \.pdf, \.dot"):
        render_model(EightSchools(), filename=tmp_path / "x.jpg")
