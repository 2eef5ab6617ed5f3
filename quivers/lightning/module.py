"""``SVIModule``: the ELBO as a ``LightningModule``."""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torchmetrics import MeanMetric

from .._version import __version__
from ..errors import ConfigError, GuideError, ModelSpecError
from ..guides.composite import guide_from_spec
from ..guides.guide import Guide, check_guide
from ..infer.compiled import CompiledObjective
from ..infer.elbo import ELBO, Trace_ELBO
from ..infer.nonfinite import SkippedSteps, check_policy, nonfinite_error, step_is_finite
from ..infer.optim import check_learning_rate, check_optimizer
from ..infer.predictive import Predictive
from ..infer.whitened import WhitenedAdam, whitened_groups
from ..program import MonadicProgram
from ..spec import Recordable, SpecError, check_arguments, from_spec, object_path
from ..trust import SpecPolicy
from .checkpoint import AtomicCheckpointIO, check_rng_state, check_state_dict, check_version, read_checkpoint

__all__ = ["SVIModule", "build_guide", "check_specs"]

# the path load_from_checkpoint is reading, for on_load_checkpoint's messages
_LOADING: ContextVar[Any] = ContextVar("quivers_loading_checkpoint", default=None)

GuideArg = Guide | Callable[[MonadicProgram], Guide] | dict


def build_guide(guide: GuideArg, model: MonadicProgram) -> Guide:
    """A guide from an instance, a callable ``model -> Guide`` (a class, a partial, or what
    LightningCLI makes of a ``class_path``), or a recorded spec.

    Raises
    ------
    GuideError
        If the result is not a :class:`Guide`.
    SpecError
        If a spec names an argument its class does not take.
    """
    if isinstance(guide, dict):
        guide = guide_from_spec(guide, model)
    elif not isinstance(guide, Guide) and callable(guide):
        if isinstance(guide, functools.partial):  # a class with bound arguments (LightningCLI's class_path)
            classes = [a for a in (guide.func, *guide.args) if inspect.isclass(a) and issubclass(a, Guide)]
            if classes:
                check_arguments(classes[0], guide.keywords, f"guide {object_path(classes[0])}", skip=("model",))
        guide = guide(model)
    if not isinstance(guide, Guide):
        raise GuideError(f"guide: expected a Guide, a callable model -> Guide or a spec, got {type(guide).__name__}")
    return guide


_SLOTS: dict[str, tuple[type, ...]] = {"model": (MonadicProgram,), "guide": (Guide,), "elbo": (ELBO,)}


def check_specs(policy: SpecPolicy, hparams: Mapping[str, Any]) -> None:
    """Check an ``SVIModule``'s specs (a checkpoint's hyper-parameters) against ``policy``
    before anything is imported from an untrusted module or called: the model, guide and
    objective specs and the optimizer path (see :mod:`quivers.trust`).

    Raises
    ------
    CheckpointError
        Naming the source, the key and how to trust the module.
    """
    for key, kinds in _SLOTS.items():
        if isinstance(hparams.get(key), Mapping):
            policy.check(hparams[key], key, kinds)
    if isinstance(hparams.get("optimizer"), str):
        policy.resolve(hparams["optimizer"], "optimizer", (torch.optim.Optimizer,))


def _record(obj: Recordable, what: str, exclude: tuple[str, ...] = ()) -> dict:
    """Spec of a Recordable; arguments that cannot be recorded are dropped with a warning."""

    def warn(name: str, error: SpecError) -> None:
        warnings.warn(
            f"{what} {type(obj).__name__}: argument {name!r} cannot be recorded ({error}); "
            f"load_from_checkpoint rebuilds it with the default (pass {what}=... to override)",
            stacklevel=4,
        )

    return obj.init_spec(exclude, on_error=warn)


class SVIModule(L.LightningModule):
    """Stochastic variational inference as a ``LightningModule``.

    ``training_step`` returns the negative ELBO; ``Trainer`` does the rest (loops,
    logging, checkpoints, devices). The module records how to rebuild its model, guide
    and objective (``class_path`` and constructor arguments) in its hyper-parameters,
    so ``SVIModule.load_from_checkpoint(path)`` needs no arguments and no warm-up step,
    and nothing is unpickled but plain data.

    Parameters
    ----------
    model : MonadicProgram or spec dict
        The model.
    guide : Guide, callable ``model -> Guide``, or spec dict
        The guide (for instance ``AutoNormalGuide(model)`` or ``AutoNormalGuide``).
    elbo : ELBO, optional
        The objective (default ``Trace_ELBO()``).
    optimizer : str or type
        Optimizer class or its import path (default ``"torch.optim.Adam"``); it covers
        the guide's and the model's parameters.
    lr : float
        Learning rate.
    optimizer_kwargs : dict, optional
        Further optimizer arguments.
    num_predict_samples : int
        Posterior predictive draws per batch in ``predict_step``.
    num_val_samples : int
        Posterior draws for the held-out log predictive density.
    data_plate : str
        The model's plate whose global size is the data module's ``num_data``.
    compile : bool
        Run the loss and its backward under ``torch.compile`` as one graph (see
        :class:`~quivers.infer.compiled.CompiledObjective`); the first step runs eagerly
        with every check, and a model that cannot be compiled falls back to eager with a
        ``UserWarning``. The optimizer step stays Lightning's.
    on_nonfinite : {"raise", "skip"}
        What a step with a non-finite loss or gradient does: raise
        :class:`~quivers.errors.NonFiniteLossError` naming the sites whose log-density is
        non-finite, before the optimizer step (default), or skip the optimizer step,
        count it in :attr:`num_skipped_steps` and log ``train/skipped_steps``. A skipped
        step still counts in ``trainer.global_step`` (Lightning counts the steps it ran),
        so ``max_steps`` includes it; a ``RuntimeWarning`` says so after 10 skipped steps
        in a row.
    trusted : sequence of str
        Module prefixes whose classes and functions specs may name (see
        :mod:`quivers.trust`): needed when a spec (a checkpoint's) names your own
        classes, e.g. ``SVIModule.load_from_checkpoint(path, trusted=("mypackage",))``.
        Never recorded in checkpoints. Objects passed directly (not as specs) need no trust.

    Logged metrics
    --------------
    ``train/elbo`` (estimate of the full-data ELBO, nats) and ``train/elbo_per_obs``
    (divided by the data plate's size): epoch means weighted by batch rows
    (torchmetrics ``MeanMetric``, synchronised across devices), and the step values as
    ``train/elbo_step`` and ``train/elbo_per_obs_step`` on the steps the logger writes
    (every ``Trainer(log_every_n_steps=...)``); ``val/lpd`` (held-out log predictive
    density per observation) when a validation set exists.

    Raises
    ------
    GuideError
        If ``guide`` was built for another model instance or samples sites that are not
        latent sites of ``model``.
    ModelSpecError
        If ``model`` is not a ``MonadicProgram`` or a spec of one.
    ConfigError
        If ``lr`` is not a positive finite number, ``optimizer_kwargs`` names an argument
        the optimizer does not take, or ``on_nonfinite`` is not ``"raise"`` or ``"skip"``;
        at ``setup``, if the data module's plate is not a plate of the model (while the
        model has plates, or the data is split into batches) or its row count differs from
        the size of a plate holding latent sites the guide was built for.
    """

    def __init__(
        self,
        model: MonadicProgram | dict,
        guide: GuideArg,
        elbo: ELBO | dict | None = None,
        optimizer: str | type = "quivers.infer.WhitenedAdam",
        lr: float = 0.01,
        optimizer_kwargs: dict | None = None,
        final_lr_frac: float = 1.0,
        decay_start: float = 0.5,
        num_predict_samples: int = 100,
        num_val_samples: int = 100,
        data_plate: str = "data",
        compile: bool = False,
        on_nonfinite: str = "raise",
        trusted: Sequence[str] = (),
    ) -> None:
        super().__init__()
        check_policy(on_nonfinite)
        lr = check_learning_rate(lr, "SVIModule")
        if not 0 < final_lr_frac <= 1:
            raise ConfigError(f"SVIModule: final_lr_frac must be in (0, 1], got {final_lr_frac!r}")
        if not 0 <= decay_start < 1:
            raise ConfigError(f"SVIModule: decay_start must be in [0, 1), got {decay_start!r}")
        path = _LOADING.get()
        policy = SpecPolicy(tuple(trusted), f"checkpoint {path}" if path is not None else "SVIModule's arguments")
        check_specs(policy, {"model": model, "guide": guide, "elbo": elbo, "optimizer": optimizer})
        with policy.active():  # specs (a checkpoint's) name only what the policy allows
            model = from_spec(model) if isinstance(model, dict) else model
            if not isinstance(model, MonadicProgram):
                raise ModelSpecError(f"model: expected a MonadicProgram or a spec, got {type(model).__name__}")
            elbo = from_spec(elbo) if isinstance(elbo, dict) else (elbo if elbo is not None else Trace_ELBO())
            if isinstance(optimizer, str):
                self._optimizer_cls = policy.resolve(optimizer, "optimizer", (torch.optim.Optimizer,))
            else:
                self._optimizer_cls, optimizer = optimizer, object_path(optimizer)
            guide = build_guide(guide, model)
        check_guide(model, guide, "SVIModule")
        if "lr" in (optimizer_kwargs or {}):
            raise ConfigError("SVIModule: pass the learning rate as lr=..., not in optimizer_kwargs")
        check_arguments(self._optimizer_cls, optimizer_kwargs or {}, "SVIModule: optimizer_kwargs", ConfigError,
                        skip=("params",))
        self.model = model
        self.guide = guide
        self.elbo = elbo
        self.optimizer_path = optimizer
        self.lr = float(lr)
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        self.final_lr_frac = float(final_lr_frac)
        self.decay_start = float(decay_start)
        # (parameter, P) pairs for WhitenedAdam, set by the LaplaceWarmStart callback
        self.whitening: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        self.num_predict_samples = int(num_predict_samples)
        self.num_val_samples = int(num_val_samples)
        self.data_plate = data_plate
        self.save_hyperparameters({
            "model": _record(model, "model"),
            "guide": _record(self.guide, "guide", exclude=("model",)),
            "elbo": _record(elbo, "elbo"),
            "optimizer": optimizer,
            "lr": self.lr,
            "optimizer_kwargs": self.optimizer_kwargs,
            "final_lr_frac": self.final_lr_frac,
            "decay_start": self.decay_start,
            "num_predict_samples": self.num_predict_samples,
            "num_val_samples": self.num_val_samples,
            "data_plate": data_plate,
            "compile": bool(compile),
            "on_nonfinite": on_nonfinite,
        })
        self.on_nonfinite = on_nonfinite
        self._skipped = SkippedSteps()
        self._last_batch: Mapping[str, torch.Tensor] | None = None
        self._step_values: tuple[torch.Tensor, torch.Tensor, int] | None = None
        self._compiled = CompiledObjective(self.elbo, self.model, self.guide) if compile else None
        self._attached_plate: str | None = None  # the data module's plate, once setup has seen it
        self._rng_state: torch.Tensor | None = None
        self._cuda_rng_state: torch.Tensor | None = None
        self.train_elbo = MeanMetric()
        self.train_elbo_per_obs = MeanMetric()
        self.val_lpd = MeanMetric()

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        # Lightning calls setup before it reads trainer.fit/validate/predict(ckpt_path=...): a
        # Trainer's default CheckpointIO becomes AtomicCheckpointIO, which writes atomically and
        # refuses a missing, truncated or corrupted file before anything loads
        strategy = self.trainer.strategy if self._trainer is not None else None
        if strategy is not None and type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and getattr(dm, "num_data", None) is not None:
            self._attach_data(dm)

    def _attach_data(self, dm: Any) -> None:
        """Size the model's data plate from the data module's ``num_data``, after checking
        that the plate exists and that its size can change."""
        num_data, plate = int(dm.num_data), getattr(dm, "plate", self.data_plate)
        model = self.model
        self._attached_plate = plate if plate in model.plates else None
        if plate not in model.plates:
            batch_size = getattr(dm, "batch_size", None)
            splits = (batch_size is not None and batch_size < num_data) or self.trainer.world_size > 1
            if model.plates or splits:
                raise ConfigError(
                    f"the data module's plate {plate!r} is not a plate of the model (its plates are "
                    f"{list(model.plates)}); its rows would not be scaled by N / batch rows: "
                    "set the data module's plate to the model's data plate"
                )
            return
        size = model.plates[plate].size
        local = [s.name for s in model.latent_steps.values() if plate in [p.name for p in s.plates]]
        if size is not None and size != num_data and local:
            raise ConfigError(
                f"the data module has {num_data} rows in plate {plate!r}, but the model's plate {plate!r} has "
                f"size {size} and holds latent sites {local} whose guide parameters have {size} rows; "
                f"build the model (and its guide) for {num_data} rows"
            )
        model.set_plate_size(plate, num_data)

    def configure_optimizers(self) -> Any:
        """The optimizer over the guide's, the model's and the objective's (learned baselines)
        parameters (one parameter group per
        parameter for :class:`~quivers.infer.WhitenedAdam`, whitened as the
        :class:`~quivers.lightning.LaplaceWarmStart` callback found) and, with
        ``final_lr_frac < 1``, a per-step schedule: constant for the first ``decay_start``
        of the fit's steps (``trainer.estimated_stepping_batches``: ``max_steps``, or
        ``max_epochs`` times the batches per epoch), then exponential decay to
        ``final_lr_frac * lr`` at the end.

        Raises
        ------
        ConfigError
            With ``final_lr_frac < 1`` and neither ``max_steps`` nor ``max_epochs`` set.
        """
        seen, params = set(), []
        for p in [*self.guide.parameters(), *self.model.parameters(), *self.elbo.parameters()]:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        if issubclass(self._optimizer_cls, WhitenedAdam):
            params = whitened_groups(params, self.whitening)
        optimizer = self._optimizer_cls(params, lr=self.lr, **self.optimizer_kwargs)
        check_optimizer(optimizer, "SVIModule")
        if self.final_lr_frac == 1.0:
            return optimizer
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else math.inf
        if not math.isfinite(total) or total < 1:
            raise ConfigError("SVIModule: final_lr_frac < 1 decays the learning rate over the fit's steps; set the "
                              "trainer's max_steps or max_epochs")
        total = int(total)
        start = int(self.decay_start * total)
        frac = self.final_lr_frac

        def factor(step: int) -> float:
            return 1.0 if step <= start else frac ** (min(step - start, total - start) / max(total - start, 1))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _rows(batch: Mapping[str, torch.Tensor]) -> int:
        for v in batch.values():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                return int(v.shape[0])
        return 1

    def _num_data(self) -> int | None:
        p = self.model.plates.get(self.data_plate)
        return p.size if p is not None else None

    def _rng_devices(self) -> list[int]:
        return [self.device.index or 0] if self.device.type == "cuda" else []

    def _objective(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The loss, drawn from the module's own random stream.

        The ELBO's Monte Carlo draws use a private RNG state that is saved in
        checkpoints, so a resumed fit continues exactly where it stopped, whatever else
        (data loaders, callbacks) draws from the global generator meanwhile.
        """
        devices = self._rng_devices()
        if self._rng_state is None:  # first step: branch off the (seeded) global stream
            self._rng_state = torch.get_rng_state()
            self._cuda_rng_state = torch.cuda.get_rng_state(devices[0]) if devices else None
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self._rng_state)
            if devices and self._cuda_rng_state is not None:
                torch.cuda.set_rng_state(self._cuda_rng_state, devices[0])
            if self._compiled is not None:
                loss = self._compiled(batch)
            else:
                loss = self.elbo(self.model, self.guide, batch)
            self._rng_state = torch.get_rng_state()
            self._cuda_rng_state = torch.cuda.get_rng_state(devices[0]) if devices else None
        return loss

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self._last_batch = batch
        loss = self._objective(batch)
        rows = self._rows(batch)
        elbo = -loss.detach()
        per_obs = elbo / (self._num_data() or rows)
        self._step_values = (elbo, per_obs, rows)  # into the epoch means once the step is applied
        if self._logs_this_step():
            self.log("train/elbo_step", elbo, on_step=True, on_epoch=False, prog_bar=True, batch_size=rows)
            self.log("train/elbo_per_obs_step", per_obs, on_step=True, on_epoch=False, batch_size=rows)
        return loss

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Run the closure (``training_step`` and backward), then apply the step only if
        the loss and every gradient are finite (see ``on_nonfinite``)."""
        if optimizer_closure is None:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        check_optimizer(getattr(optimizer, "optimizer", optimizer), "SVIModule")
        loss = optimizer_closure()
        if loss is not None and not step_is_finite(loss.detach(), self.parameters()):
            optimizer.zero_grad(set_to_none=True)
            if self.on_nonfinite == "raise":
                raise nonfinite_error(self.model, self.guide, self._last_batch, float(loss.detach()),
                                      self.global_step + 1)
            self._skipped.skipped(self.global_step + 1)
            self._step_values = None  # a skipped step stays out of the epoch means
            self.log("train/skipped_steps", float(self.num_skipped_steps), on_step=True, on_epoch=False)
            return None
        optimizer.step()
        self._skipped.applied()
        return None

    @property
    def num_skipped_steps(self) -> int:
        """Steps dropped for a non-finite loss or gradient (``on_nonfinite="skip"``)."""
        return self._skipped.total

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._step_values is not None:
            elbo, per_obs, rows = self._step_values
            self.train_elbo.update(elbo, weight=rows)
            self.train_elbo_per_obs.update(per_obs, weight=rows)
            self._step_values = None

    def _logs_this_step(self) -> bool:
        """Whether the trainer writes step metrics after this step (every ``log_every_n_steps``).

        Each ``self.log`` call costs Lightning about as much as a small model's whole
        step, so step values are only logged when the logger will write them.
        """
        if self._trainer is None:
            return True
        every = max(int(getattr(self.trainer, "log_every_n_steps", 1) or 1), 1)
        return (self.global_step + 1) % every == 0 or self.global_step == 0

    def on_train_epoch_end(self) -> None:
        # epoch means weighted by rows, synchronised across devices by torchmetrics
        self.log("train/elbo", self.train_elbo.compute(), prog_bar=True)
        self.log("train/elbo_per_obs", self.train_elbo_per_obs.compute())
        self.train_elbo.reset()
        self.train_elbo_per_obs.reset()

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        lpd = self.log_predictive_density(batch)
        if lpd is not None:
            rows = self._rows(batch)
            self.val_lpd(lpd, weight=rows)
            self.log("val/lpd", self.val_lpd, on_epoch=True, prog_bar=True, batch_size=rows)

    @torch.no_grad()
    def log_predictive_density(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """Held-out log pointwise predictive density per observation,
        ``mean_i log mean_s p(y_i | z_s)`` with ``z_s`` drawn from the guide given the
        whole batch (nats).

        Returns ``None`` (with a warning, once) for models with latent sites in the data
        plate, whose values on held-out rows the guide has not learned.
        """
        model = self.model
        if any(p.name == self.data_plate for n in model.latent_names for p in model.site_plates(n)):
            if not getattr(self, "_warned_lpd", False):
                warnings.warn("val/lpd is not computed: the model has latent sites in the data plate", stacklevel=2)
                self._warned_lpd = True
            return None
        # held-out rows carry indices into the validation set, not into the training plate
        prepared = model.prepare({k: v for k, v in batch.items() if k != self.data_plate}, subsample=False)
        s = self.num_val_samples
        z = self.guide.draws(prepared, (s,))
        tr = model.trace(prepared, z, (s,))
        total, count = 0.0, 0
        for site in tr.values():
            if site.kind == "observed" and site.name in model.observed_names:
                lp = site.fn.log_prob(site.value)  # pointwise, sample_shape + batch_shape
                lp = lp.expand(torch.broadcast_shapes(lp.shape, (s,) + lp.shape[1:]))
                total = total + (torch.logsumexp(lp, 0) - math.log(s)).sum()
                count = max(count, lp[0].numel())
        return torch.as_tensor(total / max(count, 1))

    @torch.no_grad()
    def predict_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int = 0) -> dict[str, torch.Tensor]:
        """Posterior predictive draws for the rows of ``batch`` (the guide sees the whole
        batch, subsample indices included): ``{site: (num_predict_samples,) + site shape}``."""
        return Predictive(self.model, self.guide, num_samples=self.num_predict_samples)(batch)

    def merge_predictions(self, outputs: Sequence[Mapping[str, torch.Tensor]],
                          row_indices: Sequence[Sequence[int]] | None = None) -> dict[str, torch.Tensor]:
        """Join ``predict_step`` outputs of several batches.

        Sites in the data plate (the data module's ``plate``, else ``data_plate``) are
        concatenated along that plate's dimension; other sites (global latents) come from
        the first batch. A deterministic site that varies by row must declare the plate.

        Parameters
        ----------
        outputs : sequence of dict
            ``predict_step`` outputs, ``{site: (num_predict_samples,) + site shape}``.
        row_indices : sequence of sequences of int, optional
            The data set positions of each output's rows (Lightning's prediction
            ``batch_indices``, gathered across devices). The rows then come back in
            position order, each once (a ``DistributedSampler`` repeats rows to even out
            the ranks' shares).

        Returns
        -------
        dict of str to torch.Tensor
            ``{site: (num_predict_samples,) + site shape}`` over all rows.
        """
        model, merged = self.model, {}
        plate = self._attached_plate or self.data_plate
        keep = None
        if row_indices is not None:
            pos = torch.as_tensor([int(i) for rows in row_indices for i in rows], dtype=torch.long)
            uniq, inverse = torch.unique(pos, return_inverse=True)  # sorted positions
            keep = torch.full((len(uniq),), len(pos), dtype=torch.long).scatter_reduce(
                0, inverse, torch.arange(len(pos)), "amin")  # first occurrence of each position
        for k in outputs[0]:
            if plate in [p.name for p in model.site_plates(k)]:
                axis = 1 + model.site_depth(k) + model.plate_dim(plate)
                merged[k] = torch.cat([o[k] for o in outputs], dim=axis)
                if keep is not None:
                    merged[k] = merged[k].index_select(axis, keep.to(merged[k].device))
            else:
                merged[k] = outputs[0][k]
        return merged

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None, hparams_file: Any = None,
                             strict: bool | None = None, weights_only: bool | None = True, **kwargs: Any) -> SVIModule:
        """Rebuild the module from a checkpoint, with no arguments and no warm-up step.

        The model, guide and objective are rebuilt from their recorded ``class_path`` and
        constructor arguments, then the saved parameters are loaded. Loading uses
        ``torch.load(weights_only=True)`` by default: the checkpoint holds only tensors
        and plain data, so no arbitrary object is unpickled; the archive's checksums are
        verified first. The recorded specs are checked before anything is imported or
        called (:mod:`quivers.trust`): they may name only quivers', torch's and zuko's
        classes of the kind each slot expects, unless ``trusted=("mypackage",)`` trusts
        your own modules. ``kwargs`` override recorded hyper-parameters (for instance
        ``model=...``).

        Raises
        ------
        CheckpointError
            If the file is missing, truncated or corrupted, was not written by
            ``SVIModule``, comes from an incompatible quivers version, names code the
            caller has not trusted, or holds another model's or guide's parameters;
            nothing is loaded or run.
        """
        checkpoint = read_checkpoint(checkpoint_path)
        check_version(checkpoint, checkpoint_path)
        trusted = tuple(kwargs.pop("trusted", ()))  # only the caller trusts; a file's own "trusted" is overridden
        token = _LOADING.set(checkpoint_path)
        try:
            return super().load_from_checkpoint(
                checkpoint_path, map_location=map_location, hparams_file=hparams_file, strict=strict,
                weights_only=weights_only, trusted=trusted, **kwargs,
            )
        finally:
            _LOADING.reset(token)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["quivers"] = {
            "version": __version__, "rng_state": self._rng_state, "cuda_rng_state": self._cuda_rng_state,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # before Lightning loads any tensor: a checkpoint of another version, model or guide
        # raises here, with this module unchanged (also when resuming with trainer.fit(ckpt_path=...))
        path = _LOADING.get()
        if path is None and self._trainer is not None:
            path = self._trainer.ckpt_path
        check_version(checkpoint, path)
        check_state_dict(checkpoint.get("state_dict", {}), self.state_dict(), path)
        state = checkpoint.get("quivers", {})
        check_rng_state(state.get("rng_state"), path)
        cuda = state.get("cuda_rng_state")
        if cuda is not None and not (isinstance(cuda, torch.Tensor) and cuda.dtype == torch.uint8 and cuda.dim() == 1):
            check_rng_state(cuda, path)  # the same message for a malformed CUDA state
        self._rng_state = state.get("rng_state")
        self._cuda_rng_state = cuda
