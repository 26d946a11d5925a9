"""Checkpoint files: reading a training run's ``checkpoint.pt`` safely
(``torch.load(weights_only=True)``, failures as one :class:`CheckpointError` line) and the
portable model-only form (``STEM.json`` + ``STEM.npz``, read without pickle)."""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from pynq_nbq.errors import NbqError

CHECKPOINT = "checkpoint.pt"  #: the file name inside a run directory


class CheckpointError(NbqError):
    """A checkpoint file that cannot be read as one: corrupt, truncated, another format, or
    a pickle that asks to load code (refused, never retried without ``weights_only``)."""


#: What every model checkpoint holds (training checkpoints hold more: optimizer, scheduler).
CHECKPOINT_KEYS = ("config", "model", "classes", "input_shape", "mean", "std", "dataset")


def first_line(exc: BaseException) -> str:
    """An exception's first sentence on one line (its type's name when it has no message)."""
    text = str(exc).strip()
    return text.splitlines()[0].split(". ")[0] if text else type(exc).__name__


def _torch_load(p: Path) -> object:
    """``torch.load(weights_only=True)``, its failures as one :class:`CheckpointError` line.

    torch's own message is not passed on: it advises retrying with ``weights_only=False``,
    which would run whatever code an untrusted file names.
    """
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise here
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        named = re.search(r"GLOBAL ([\w.]+)", str(exc))  # a name, never raw file bytes
        if named:
            raise CheckpointError(
                f"{p}: refused: it asks to load {named.group(1)}, which is not tensor data "
                "(unpickling it could run code); only checkpoints written by nbq train are read"
            ) from None
        raise CheckpointError(
            f"{p}: not a checkpoint written by nbq train (corrupt, or another kind of pickle)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(
            f"{p}: not a readable checkpoint (corrupt or truncated?): {first_line(exc)}"
        ) from None


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint: a run directory or ``checkpoint.pt`` written by :func:`train`
    (``torch.load(weights_only=True)``), or a portable ``.npz`` model checkpoint
    (:func:`save_portable`, read without pickle).

    Raises FileNotFoundError when there is none, :class:`CheckpointError` (one line, naming
    the file) when it is not a readable checkpoint (not a dict).  Whether it holds a model
    (:data:`CHECKPOINT_KEYS`) is :func:`model_from_checkpoint`'s check: scripts read only
    the metrics of some.
    """
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT
    if p.suffix in (".npz", ".json"):
        ck = load_portable(p.with_suffix(""))
    elif not p.exists():
        raise FileNotFoundError(f"no checkpoint at {p}")
    else:
        ck = _torch_load(p)
    if not isinstance(ck, dict):
        raise CheckpointError(f"{p}: not a checkpoint: it holds a {type(ck).__name__}, not a dict")
    return ck


PORTABLE_KEYS = ("config", "classes", "input_shape", "mean", "std", "dataset", "epoch", "metrics")


def model_state(ck: dict) -> dict:
    """The state dict a checkpoint's model is made from: the finished model
    (``final_model``: batch norm re-estimated or the weight average,
    :mod:`host_train.finish`) where the run made one, else the weights as trained."""
    return ck.get("final_model") or ck["model"]


def save_portable(ck: dict, stem: str | os.PathLike) -> None:
    """Model-only checkpoint without pickle: ``STEM.json`` (config, classes, input
    spec, metrics) + ``STEM.npz`` (the model's state dict, deterministic bytes)."""
    from pynq_nbq.bundle import npz_bytes

    stem = Path(stem)
    meta = {k: ck[k] for k in PORTABLE_KEYS if k in ck}
    arrays = {k: v.detach().cpu().numpy() for k, v in model_state(ck).items()}
    stem.with_suffix(".npz").write_bytes(npz_bytes(arrays, compress=True))
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def load_portable(stem: str | os.PathLike) -> dict:
    """Read :func:`save_portable` files back into a checkpoint dict."""
    stem = Path(stem)
    for suffix in (".json", ".npz"):
        if not stem.with_suffix(suffix).exists():
            raise FileNotFoundError(f"no portable checkpoint at {stem.with_suffix(suffix)}")
    try:
        meta = json.loads(stem.with_suffix(".json").read_text())
        with np.load(stem.with_suffix(".npz"), allow_pickle=False) as z:
            meta["model"] = {k: torch.from_numpy(z[k].copy()) for k in z.files}
    except (ValueError, OSError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{stem}.json/.npz: not a readable portable checkpoint: {first_line(exc)}"
        ) from None
    return meta
