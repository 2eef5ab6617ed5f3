"""Checkpoints that cannot load raise CheckpointError before anything changes; writes are atomic."""

from __future__ import annotations

import lightning as L
import pytest
import torch

import quivers.lightning.checkpoint as ckpt_mod
from quivers.datasets import EightSchoolsData
from quivers.errors import CheckpointError
from quivers.guides import AutoMultivariateNormal, AutoNormalGuide
from quivers.lightning import AtomicCheckpointIO, SVIModule
from quivers.models import EightSchools


def _trainer(tmp_path, steps=2, **kw):
    return L.Trainer(max_steps=steps, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", **kw)


@pytest.fixture()
def saved(tmp_path):
    L.seed_everything(0)
    model = EightSchools()
    module = SVIModule(model, AutoNormalGuide(model), lr=0.02)
    trainer = _trainer(tmp_path)
    trainer.fit(module, EightSchoolsData())
    path = tmp_path / "good.ckpt"
    trainer.save_checkpoint(path)
    return path


def _rewrite(path, tmp_path, edit):
    checkpoint = torch.load(path, weights_only=True)
    edit(checkpoint)
    out = tmp_path / "edited.ckpt"
    torch.save(checkpoint, out)
    return out


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        SVIModule.load_from_checkpoint(tmp_path / "nope.ckpt")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_truncated_or_corrupted_file(saved, tmp_path, damage):
    data = saved.read_bytes()
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a checkpoint" * 100)
    with pytest.raises(CheckpointError, match="is truncated or corrupted"):
        SVIModule.load_from_checkpoint(bad)


def test_incompatible_version(saved, tmp_path):
    path = _rewrite(saved, tmp_path, lambda c: c["quivers"].update(version="9.0.0"))
    with pytest.raises(CheckpointError, match=r"written by quivers 9.0.0, which is incompatible"):
        SVIModule.load_from_checkpoint(path)


def test_not_written_by_svimodule(saved, tmp_path):
    path = _rewrite(saved, tmp_path, lambda c: c.pop("quivers"))
    with pytest.raises(CheckpointError, match="not written by a quivers SVIModule"):
        SVIModule.load_from_checkpoint(path)


def test_checkpoint_of_another_guide(saved):
    model = EightSchools()
    with pytest.raises(CheckpointError, match=r"another model or guide: missing \['guide.loc', 'guide.scale_raw'"):
        SVIModule.load_from_checkpoint(saved, guide={"class_path": "quivers.guides.AutoMultivariateNormal",
                                                     "init_args": {}})
    # resuming a different module from it: raises before any parameter changes
    other = SVIModule(model, AutoMultivariateNormal(model), lr=0.02)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError, match="another model or guide"):
        _trainer(saved.parent, steps=3).fit(other, EightSchoolsData(), ckpt_path=saved)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in before.items())


def test_checkpoint_of_another_shape(saved):
    with pytest.raises(CheckpointError, match=r"shapes differ \(guide.locs.eta: saved \(8,\), expected \(4,\)"):
        SVIModule.load_from_checkpoint(saved, model={"class_path": "quivers.models.EightSchools",
                                                     "init_args": {"num_schools": 4}})


def test_atomic_write_keeps_the_last_good_file(saved, monkeypatch):
    good = saved.read_bytes()
    io = AtomicCheckpointIO()

    def failing_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"x": 1}, saved)
    assert saved.read_bytes() == good  # the previous checkpoint is intact
    assert [p.name for p in saved.parent.iterdir() if p.name.endswith(".tmp")] == []  # no temporary left


def test_atomic_io_with_trainer(tmp_path):
    L.seed_everything(0)
    model = EightSchools()
    module = SVIModule(model, AutoNormalGuide(model), lr=0.02)
    trainer = _trainer(tmp_path, plugins=[AtomicCheckpointIO()])
    trainer.fit(module, EightSchoolsData())
    path = tmp_path / "atomic.ckpt"
    trainer.save_checkpoint(path)
    back = SVIModule.load_from_checkpoint(path)
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in module.state_dict().items())
