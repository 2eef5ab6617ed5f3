"""The ``quivers`` command: LightningCLI over :class:`SVIModule`.

``quivers fit --config configs/eight_schools.yaml`` fits, then prints the posterior
summary and writes ``posterior_summary.csv``/``.json`` and ``posterior.png`` to the run
directory. ``quivers predict --config ... --ckpt_path ...`` writes
``predictions.pt`` (posterior predictive draws) there.

Checkpoints are written with :class:`~quivers.lightning.AtomicCheckpointIO` (a config's
own ``trainer.plugins`` replace it), and read with ``weights_only=True`` when resuming
(``--ckpt_path``) unless ``--weights_only false`` is given. A checkpoint given with
``--ckpt_path`` is verified (present, complete, checksums, version) and its recorded specs
are checked against :mod:`quivers.trust` before LightningCLI merges them into the config:
they may name quivers', torch's and zuko's classes, the modules the config itself names,
and those ``--model.trusted`` lists; anything else stops the command with a parser error
before any file is written. So does any :class:`~quivers.errors.QuiversError` raised
while the classes are built (an argument a guide does not take, a learning rate of 0).

Under a multi-device strategy every rank asks for the run directory (``trainer.log_dir``
is a collective), rank 0 alone writes the summary, and ``predict`` gathers every rank's
draws on rank 0 (:class:`~quivers.lightning.GatherPredictions`). Without a logger
(``--trainer.logger false``) each run gets a fresh ``runs/quivers/version_<k>`` (under
``--trainer.default_root_dir`` when given), shared with the ranks a strategy launches.
The module configures its own optimizer, so LightningCLI's ``--optimizer`` and
``--lr_scheduler`` are not offered.
"""

from __future__ import annotations

import os
import pathlib
import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.cli import LightningCLI

from ..datasets.base import TensorDataModule
from ..errors import CheckpointError, QuiversError
from ..infer.inference_data import to_inference_data
from ..program.render import render_model, save_graph
from ..trust import SpecPolicy
from .checkpoint import check_version, read_checkpoint
from .module import SVIModule, check_specs
from .predictions import GatherPredictions
from .recipe import LaplaceWarmStart, PosteriorAveraging
from .summary import format_summary, plot_summary, posterior_summary, write_summary

__all__ = ["QuiversCLI", "main"]



def recipe_callbacks() -> list[Callback]:
    """The default recipe's callbacks (docs/cli.md): the Laplace warm start, averaging over
    the second half of the steps, and EarlyStopping once the epoch ELBO stops improving."""
    return [LaplaceWarmStart(), PosteriorAveraging(),
            EarlyStopping(monitor="train/elbo", mode="max", patience=3, check_on_train_epoch_end=True)]


_RUN_DIR_ENV = "QUIVERS_RUN_DIR"  # the run folder of a logger-less run, for the ranks DDP launches


class QuiversCLI(LightningCLI):
    """LightningCLI for :class:`SVIModule` with any :class:`TensorDataModule`.

    Writes checkpoints atomically (:class:`~quivers.lightning.AtomicCheckpointIO` is the
    default ``trainer.plugins``) and reads them with ``weights_only=True``.
    """

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--summary_samples", type=int, default=1000, help="posterior draws for the summary")
        parser.add_argument("--recipe", type=bool, default=True,
                            help="add the default recipe's callbacks the config does not list (LaplaceWarmStart, "
                                 "PosteriorAveraging, EarlyStopping on train/elbo) and decay lr to 1%%")
        parser.set_defaults({"model.final_lr_frac": 0.01})  # the default recipe (docs/cli.md)

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """Lightning's, plus the recipe's callbacks of a type the config does not list
        (``--recipe false``: none)."""
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand == "fit" and cfg.get("recipe", True):
            listed = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
            listed = listed if isinstance(listed, list) else [listed]
            have = {type(c) for c in listed}
            extra = [c for c in recipe_callbacks() if type(c) not in have]
            kwargs["callbacks"] = listed + extra
        return super().instantiate_trainer(**kwargs)

    def _load_weights_only(self) -> None:
        # Trainer.fit(..., weights_only=None) defers to torch.load's default, which is False
        # before torch 2.6: resume and predict from checkpoints with weights_only=True unless
        # the config says otherwise (Lightning versions without the argument are left alone)
        cfg = self.config_init[self.subcommand]
        if "weights_only" in cfg and cfg["weights_only"] is None:
            cfg["weights_only"] = True

    before_fit = before_validate = before_test = _load_weights_only

    def before_predict(self) -> None:
        self._load_weights_only()
        self._gather = GatherPredictions()
        self.trainer.callbacks.append(self._gather)

    def before_instantiate_classes(self) -> None:
        """Without a logger, Lightning writes checkpoints, config and summary into
        ``default_root_dir`` (the working directory by default), over the previous run's:
        give every such run a fresh ``version_<k>`` folder instead (shared with the
        processes a multi-device strategy launches)."""
        cfg = self.config[self.subcommand]
        self._new_run_dir = None
        if cfg.get("trainer.logger") not in (False, None, []):
            return
        if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get(_RUN_DIR_ENV):
            cfg["trainer.default_root_dir"] = os.environ[_RUN_DIR_ENV]  # a launched rank: rank 0's folder
            return
        root = pathlib.Path(cfg.get("trainer.default_root_dir") or pathlib.Path("runs") / "quivers")
        k = 0
        while (root / f"version_{k}").exists():
            k += 1
        self._new_run_dir = root / f"version_{k}"  # made once the classes are built
        os.environ[_RUN_DIR_ENV] = str(self._new_run_dir)
        cfg["trainer.default_root_dir"] = str(self._new_run_dir)

    def instantiate_classes(self) -> None:
        """Instantiate as LightningCLI does; a quivers error in the config's values (an
        argument a guide does not take, a learning rate of 0, ...) is a parser error,
        raised before anything is written."""
        try:
            super().instantiate_classes()
        except QuiversError as e:
            self.parser.error(f"{type(e).__name__}: {e}")
        if getattr(self, "_new_run_dir", None) is not None:
            self._new_run_dir.mkdir(parents=True)

    def _parse_ckpt_path(self) -> None:
        """Merge a checkpoint's hyper-parameters into the config (as LightningCLI does),
        after checking the file and the code it names; errors are parser errors."""
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if not ckpt_path:
            return
        try:
            checkpoint = read_checkpoint(ckpt_path)
            check_version(checkpoint, ckpt_path)
            hparams = dict(checkpoint.get("hyper_parameters") or {})
            for key in ("_instantiator", "trusted"):  # trust comes from the user, never from the file
                hparams.pop(key, None)
            trusted = sorted(set(self.config[sub].get("model.trusted") or ()) | _config_modules(self.config[sub]))
            check_specs(SpecPolicy(tuple(trusted), f"checkpoint {ckpt_path}"), hparams)
        except CheckpointError as e:
            self.parser.error(f"--ckpt_path: {e}")
        if not hparams:
            return
        self.config[sub]["model.trusted"] = trusted
        self.config = self.parser.parse_object({sub: {"model": hparams}}, self.config)

    def _run_dir(self) -> pathlib.Path:
        d = pathlib.Path(self.trainer.log_dir or ".")
        d.mkdir(parents=True, exist_ok=True)
        return d

    def after_fit(self) -> None:
        run = self._run_dir()  # trainer.log_dir is a collective under DDP: every rank asks
        if not self.trainer.is_global_zero:
            return
        module, dm = self.model, self.datamodule
        batch = dm.full_batch() if isinstance(dm, TensorDataModule) else None
        n = self.config[self.subcommand].get("summary_samples", 1000)
        idata = to_inference_data(module.model, module.guide, batch, n, posterior_predictive=False)
        rows = posterior_summary(module.model, module.guide, idata=idata)
        paths = write_summary(rows, run)
        png = plot_summary(rows, run / "posterior.png", run / "metrics.csv")
        graph = save_graph(render_model(module.model), run / "model.svg")  # model.dot without Graphviz's dot
        attrs = idata.sample_stats.attrs
        print(f"\nPosterior summary ({n} draws from the guide; ArviZ)")
        print(format_summary(rows))
        print(f"\nPSIS k-hat {attrs['psis_k_hat']:.3f} from {n} draws (ESS {attrs['psis_ess']:.0f}): "
              f"{attrs['psis_reading']}")
        print("\nwritten: " + ", ".join(str(p) for p in [*paths, png, graph]))

    def after_predict(self) -> None:
        run = self._run_dir()  # a collective under DDP: every rank asks
        merged = self._gather.predictions  # every rank's rows, gathered on rank 0
        if not self.trainer.is_global_zero or merged is None:
            return
        path = run / "predictions.pt"
        torch.save(merged, path)
        print("posterior predictive draws: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in merged.items()))
        print(f"written: {path}")


def _config_modules(config: Any) -> set[str]:
    """The top-level packages of every ``class_path`` the user's own config names (code the
    command imports anyway)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            path = node.get("class_path")
            if isinstance(path, str) and "." in path:
                found.add(path.split(".")[0])
            for v in node.values():
                walk(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)

    walk(config.as_dict() if hasattr(config, "as_dict") else config)
    return found


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``quivers`` console script."""
    warnings.filterwarnings("ignore", message=".*Total length of .* across ranks is zero.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*'set_vital' is deprecated.*")  # torchdata on recent torch
    QuiversCLI(
        SVIModule,
        TensorDataModule,
        subclass_mode_data=True,
        auto_configure_optimizers=False,  # SVIModule configures its optimizer (--model.optimizer, --model.lr)
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"plugins": [{"class_path": "quivers.lightning.AtomicCheckpointIO"}]},
        args=args,
    )


if __name__ == "__main__":
    main()
