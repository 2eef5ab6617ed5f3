"""Checkpoint writes are atomic. (Checkpoints that cannot load are cases of the bad-input
catalogue, tests/test_error_catalogue.py.)"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from error_catalogue import Context
from helpers import short_trainer

import quivers.lightning.checkpoint as ckpt_mod
from quivers.datasets import EightSchoolsData
from quivers.guides import AutoNormalGuide
from quivers.lightning import AtomicCheckpointIO, SVIModule
from quivers.models import EightSchools


@pytest.fixture()
def saved(tmp_path):
    return Context(tmp_path).checkpoint


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
    trainer = short_trainer(tmp_path, plugins=[AtomicCheckpointIO()])
    trainer.fit(module, EightSchoolsData())
    path = tmp_path / "atomic.ckpt"
    trainer.save_checkpoint(path)
    back = SVIModule.load_from_checkpoint(path)
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in module.state_dict().items())


def test_stale_temporary_files_are_removed_and_permissions_are_a_plain_writes(tmp_path):
    target = tmp_path / "m.ckpt"
    stale = tmp_path / ".m.ckpt.abc123.tmp"  # what a write killed before its rename leaves
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".other.ckpt.xyz.tmp"
    other.write_bytes(b"another target's")
    AtomicCheckpointIO().save_checkpoint({"x": torch.ones(2)}, target)
    assert not stale.exists() and other.exists()  # only the target's own leftovers
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"")
    assert (target.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)  # umask applied, as open() does
    assert torch.equal(torch.load(target, weights_only=True)["x"], torch.ones(2))


def test_a_plain_trainer_gets_the_verifying_checkpoint_io(tmp_path):
    model = EightSchools()
    module = SVIModule(model, AutoNormalGuide(model), lr=0.02)
    trainer = short_trainer(tmp_path)
    trainer.fit(module, EightSchoolsData())
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO
