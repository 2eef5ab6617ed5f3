"""Loading a checkpoint never runs code the user has not trusted (quivers.trust): each route
(SVIModule.load_from_checkpoint, quivers predict/fit --ckpt_path) against os.system,
subprocess.run, builtins.exec, partials of them, and a module whose import has effects."""

from __future__ import annotations

import sys

import lightning as L
import pytest
import torch
import yaml
from helpers import short_trainer

from quivers.datasets import EightSchoolsData
from quivers.errors import CheckpointError
from quivers.guides import AutoNormalGuide
from quivers.lightning import SVIModule
from quivers.lightning.cli import main
from quivers.models import EightSchools
from quivers.trust import SpecPolicy


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    L.seed_everything(0)
    model = EightSchools()
    module = SVIModule(model, AutoNormalGuide(model), lr=0.02)
    trainer = short_trainer(root, steps=2)
    trainer.fit(module, EightSchoolsData())
    path = root / "good.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """A module whose import writes a file."""
    sentinel = tmp_path / "imported"
    (tmp_path / "evil_module.py").write_text(
        f"open({str(sentinel)!r}, 'w').write('ran')\nimport torch\nclass Opt(torch.optim.SGD):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return sentinel


def _payloads(sentinel):
    cmd = f"touch {sentinel}"
    return {
        "model_os_system": ("model", {"class_path": "os.system", "init_args": {"command": cmd}}),
        "model_subprocess": ("model", {"class_path": "subprocess.run",
                                       "init_args": {"args": ["touch", str(sentinel)]}}),
        "elbo_nested_os_system": ("elbo", {"class_path": "quivers.infer.elbo.Trace_ELBO", "init_args": {
            "num_particles": {"class_path": "os.system", "init_args": {"command": cmd}}}}),
        "guide_partial_subprocess": ("guide", {"class_path": "quivers.guides.normal.AutoNormalGuide", "init_args": {
            "init_loc_fn": {"partial": "subprocess.run", "args": [["touch", str(sentinel)]], "kwargs": {"dict": {}}}}}),
        "guide_partial_exec": ("guide", {"class_path": "quivers.guides.normal.AutoNormalGuide", "init_args": {
            "init_loc_fn": {"partial": "builtins.exec", "args": [f"open({str(sentinel)!r}, 'w')"],
                            "kwargs": {"dict": {}}}}}),
        "guide_string_path": ("guide", {"class_path": "quivers.guides.normal.AutoNormalGuide", "init_args": {
            "init_loc_fn": "os.system"}}),
        "guide_callable_exec": ("guide", {"class_path": "quivers.guides.normal.AutoNormalGuide", "init_args": {
            "init_loc_fn": {"callable": "builtins.exec"}}}),
        "quivers_function": ("model", {"class_path": "quivers.spec.import_path", "init_args": {"path": "os.system"}}),
        "optimizer_module_import": ("optimizer", "evil_module.Opt"),
    }


def _edited(good, tmp_path, key, value):
    ckpt = torch.load(good, weights_only=True)
    ckpt["hyper_parameters"][key] = value
    path = tmp_path / f"evil_{key}.ckpt"
    torch.save(ckpt, path)
    return path


PAYLOADS = list(_payloads("x"))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_load_from_checkpoint_runs_nothing(good_checkpoint, tmp_path, evil_module, payload):
    sentinel = tmp_path / "ran"
    key, value = _payloads(sentinel)[payload]
    path = _edited(good_checkpoint, tmp_path, key, value)
    where = "AutoNormalGuide's init_loc_fn" if payload == "guide_string_path" else key  # read by the guide itself
    with pytest.raises(CheckpointError, match=f"checkpoint {path}: {where}.* names '.*', which .*trusted=\\("):
        SVIModule.load_from_checkpoint(path)
    assert not sentinel.exists() and not evil_module.exists() and "evil_module" not in sys.modules


def test_a_checkpoint_cannot_trust_itself(good_checkpoint, tmp_path, evil_module):
    ckpt = torch.load(good_checkpoint, weights_only=True)
    ckpt["hyper_parameters"].update(optimizer="evil_module.Opt", trusted=["evil_module"])
    torch.save(ckpt, tmp_path / "self_trusting.ckpt")
    with pytest.raises(CheckpointError, match="evil_module.Opt"):
        SVIModule.load_from_checkpoint(tmp_path / "self_trusting.ckpt")
    assert not evil_module.exists()


def test_the_users_own_module_loads_when_trusted(good_checkpoint, tmp_path, evil_module):
    path = _edited(good_checkpoint, tmp_path, "optimizer", "evil_module.Opt")
    with pytest.raises(CheckpointError):
        SVIModule.load_from_checkpoint(path)
    module = SVIModule.load_from_checkpoint(path, trusted=("evil_module",))
    assert evil_module.exists()  # trusted: imported, as asked
    assert type(module.configure_optimizers()).__name__ == "Opt"
    user = torch.load(good_checkpoint, weights_only=True)
    user["hyper_parameters"]["guide"] = {"class_path": "user_guides.ScalarNormalGuide",
                                         "init_args": {"init_log_scale": -2.0}}
    user["state_dict"] = {k: v for k, v in user["state_dict"].items() if not k.startswith("guide.")}
    user["state_dict"].update({f"guide.{k}": v for k, v in _user_guide_state().items()})
    torch.save(user, tmp_path / "user.ckpt")
    with pytest.raises(CheckpointError, match="'user_guides.ScalarNormalGuide'.*trusted=\\('user_guides',\\)"):
        SVIModule.load_from_checkpoint(tmp_path / "user.ckpt")
    assert type(SVIModule.load_from_checkpoint(tmp_path / "user.ckpt", trusted=("user_guides",)).guide).__name__ == \
        "ScalarNormalGuide"


def _user_guide_state():
    from user_guides import ScalarNormalGuide

    return ScalarNormalGuide(EightSchools(), init_log_scale=-2.0).state_dict()


def _config(tmp_path):
    cfg = yaml.safe_load((__import__("pathlib").Path(__file__).resolve().parents[1] / "configs" /
                          "eight_schools.yaml").read_text())
    cfg["trainer"].update({"max_steps": 2, "enable_progress_bar": False})
    cfg["trainer"].pop("callbacks", None)
    cfg["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "runs")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("subcommand", ["predict", "fit"])
@pytest.mark.parametrize("payload", ["model_os_system", "elbo_nested_os_system", "guide_partial_subprocess",
                                     "guide_partial_exec", "optimizer_module_import"])
def test_the_cli_refuses_before_writing_anything(good_checkpoint, tmp_path, evil_module, capsys, subcommand,
                                                 payload):
    sentinel = tmp_path / "ran"
    key, value = _payloads(sentinel)[payload]
    path = _edited(good_checkpoint, tmp_path, key, value)
    cfg = _config(tmp_path)
    with pytest.raises(SystemExit) as e:
        main([subcommand, "--config", str(cfg), "--ckpt_path", str(path)])
    assert e.value.code == 2
    assert "--ckpt_path: checkpoint" in capsys.readouterr().err
    assert not sentinel.exists() and not evil_module.exists() and not (tmp_path / "runs").exists()


def test_policy_messages_name_the_key_and_the_trust_argument():
    policy = SpecPolicy(source="checkpoint x.ckpt")
    with pytest.raises(CheckpointError, match=r"checkpoint x.ckpt: model.init_args.net.class_path names "
                                              r"'os.system', which is not in quivers"):
        policy.check({"class_path": "quivers.models.EightSchools", "init_args": {
            "net": {"class_path": "os.system"}}}, "model")
    assert policy.resolve("torch.optim.Adam", "optimizer", (torch.optim.Optimizer,)) is torch.optim.Adam
    with pytest.raises(CheckpointError, match="is not a Optimizer class"):
        policy.resolve("torch.nn.Linear", "optimizer", (torch.optim.Optimizer,))
