"""Safe checkpoints: checked before anything loads, written atomically."""

from __future__ import annotations

import os
import pathlib
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .._version import __version__
from ..errors import CheckpointError

__all__ = ["AtomicCheckpointIO", "read_checkpoint", "verify_archive", "check_version", "check_state_dict",
           "check_rng_state"]


def _major_minor(version: str) -> tuple[int, int]:
    parts = (version.split("+")[0].split(".") + ["0", "0"])[:2]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError as e:
        raise CheckpointError(f"checkpoint has an unreadable quivers version {version!r}") from e


def check_version(checkpoint: Mapping[str, Any], path: Any = None) -> None:
    """Raise unless the checkpoint was written by a compatible quivers ``SVIModule``.

    Compatible: the same major version, and for ``0.x`` the same minor version
    (semantic versioning's rule for pre-1.0 releases).

    Raises
    ------
    CheckpointError
        If the checkpoint has no quivers section or an incompatible version.
    """
    where = f" {path}" if path is not None else ""
    meta = checkpoint.get("quivers")
    if not isinstance(meta, Mapping) or "version" not in meta:
        raise CheckpointError(
            f"checkpoint{where} was not written by a quivers SVIModule (no 'quivers' section with a version)")
    saved, ours = _major_minor(str(meta["version"])), _major_minor(__version__)
    if saved[0] != ours[0] or (ours[0] == 0 and saved[1] != ours[1]):
        raise CheckpointError(
            f"checkpoint{where} was written by quivers {meta['version']}, which is incompatible with this "
            f"quivers {__version__}; load it with quivers {saved[0]}.{saved[1]}.x")


def check_state_dict(saved: Mapping[str, torch.Tensor], current: Mapping[str, torch.Tensor], path: Any = None) -> None:
    """Raise unless ``saved`` has exactly the parameter names and shapes of ``current``.

    Raises
    ------
    CheckpointError
        Naming the missing, unexpected and differently-shaped entries: the checkpoint
        belongs to another model or guide.
    """
    missing = sorted(set(current) - set(saved))
    unexpected = sorted(set(saved) - set(current))
    shapes = sorted(f"{k}: saved {tuple(saved[k].shape)}, expected {tuple(current[k].shape)}"
                    for k in set(saved) & set(current) if tuple(saved[k].shape) != tuple(current[k].shape))
    if missing or unexpected or shapes:
        where = f" {path}" if path is not None else ""
        parts = [f"missing {missing}" if missing else "", f"unexpected {unexpected}" if unexpected else "",
                 f"shapes differ ({'; '.join(shapes)})" if shapes else ""]
        raise CheckpointError(
            f"checkpoint{where} holds the parameters of another model or guide: "
            + ", ".join(p for p in parts if p) + ". Load it with the model and guide it was written for")


def verify_archive(path: Any) -> pathlib.Path:
    """Check that ``path`` is a complete ``torch.save`` archive whose every record matches
    its CRC-32 (torch stores one per record and never checks it: a flipped bit in a tensor
    loads as a changed value).

    Raises
    ------
    CheckpointError
        If the file is missing, is not a complete zip archive, or a record is corrupted;
        the message names the file (and the record).
    """
    p = pathlib.Path(os.fspath(path))
    if not p.is_file():
        raise CheckpointError(f"checkpoint file not found: {p}")
    if not zipfile.is_zipfile(p):  # torch.save writes a zip archive; a cut or damaged one is not
        raise CheckpointError(
            f"checkpoint {p} is truncated or corrupted: it is not a complete torch.save archive "
            f"({p.stat().st_size} bytes)")
    try:
        with zipfile.ZipFile(p) as z:
            bad = z.testzip()
    except Exception as e:  # noqa: BLE001 - a damaged directory or header: unreadable
        raise CheckpointError(
            f"checkpoint {p} is corrupted ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {p} is corrupted: its record {bad!r} does not match its CRC-32 checksum (the bytes changed "
            "after it was written); restore it from a copy")
    return p


def check_rng_state(state: Any, path: Any = None) -> None:
    """Raise unless ``state`` is a CPU generator state torch can restore.

    Raises
    ------
    CheckpointError
        For anything but ``None`` or a ``uint8`` tensor of ``torch.get_rng_state()``'s shape.
    """
    if state is None:
        return
    want = torch.get_rng_state()
    if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8 or state.shape != want.shape:
        where = f" {path}" if path is not None else ""
        got = f"{state.dtype} {tuple(state.shape)}" if isinstance(state, torch.Tensor) else type(state).__name__
        raise CheckpointError(
            f"checkpoint{where} holds a malformed random-number state ({got}, expected uint8 {tuple(want.shape)}); "
            "the file was edited or damaged")


def read_checkpoint(path: Any, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with clear errors.

    Raises
    ------
    CheckpointError
        If the file does not exist, is truncated or corrupted (not a complete ``torch.save``
        archive whose records match their checksums, see :func:`verify_archive`), or holds
        pickled objects beyond tensors and plain containers (which ``weights_only=True``
        refuses to unpickle).
    """
    p = verify_archive(path)
    try:
        checkpoint = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"checkpoint {p} holds pickled objects other than tensors and plain containers, which quivers "
            "does not unpickle (torch.load(weights_only=True)), so it was not written by SVIModule; if you "
            "trust the file, read it with torch.load(weights_only=False) yourself") from e
    except Exception as e:  # noqa: BLE001 - zipfile, pickle and EOF errors all mean "unreadable"
        raise CheckpointError(
            f"checkpoint {p} is truncated or corrupted ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {p} holds a {type(checkpoint).__name__}, not a Lightning checkpoint dict")
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` that never leaves a half-written checkpoint in place and
    never loads a damaged one.

    Each checkpoint is written to a temporary file ``.<name>.<random>.tmp`` in the same
    directory, flushed to disk (``fsync``), given the permissions a plain write would
    have (``0o666`` less the umask), and renamed over the target (``os.replace``, atomic
    on POSIX and Windows). A crash or an error during the write leaves the previous file
    intact and removes the temporary one; temporary files a killed process left behind
    are removed at the target's next write (their names start with a dot, so checkpoint
    globs ignore them meanwhile). Loading (``trainer.fit(ckpt_path=...)``) first checks
    the archive's checksums (:func:`verify_archive`). Local paths only; pass it as
    ``Trainer(plugins=[AtomicCheckpointIO()])`` (the ``quivers`` CLI's default).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        target = pathlib.Path(os.fspath(path))
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{target.name}.*.tmp"):  # left by a killed write
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Verify the archive's checksums, then load as Lightning does.

        Raises
        ------
        CheckpointError
            If the file is missing, truncated or corrupted.
        """
        verify_archive(path)
        try:
            return super().load_checkpoint(path, *args, **kwargs)
        except CheckpointError:
            raise
        except pickle.UnpicklingError as e:
            raise CheckpointError(f"checkpoint {path} holds pickled objects that torch refuses to load ({e})") from e


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
