"""The training loop: float, reconstructed-gradient, STE and INQ training, and
round-to-nearest post-training quantisation, all in the same code.

A run directory holds:

* ``checkpoint.pt`` - model, optimizer, lr-scheduler state, metrics and config after
  the last finished epoch (``torch.load(..., weights_only=True)`` reads it);
  ``--resume`` continues from it bit-identically (data order and augmentation
  are drawn from a generator seeded by (seed, epoch), not from global state);
* ``metrics.json`` - one record per epoch (loss, accuracies, a, lr, seconds);
* ``curves.png`` - loss and accuracy curves.

Several processes (``torchrun``, ``nbq train --nproc N``) train one model together
through the hooks of :mod:`host_train.distributed` (data split, DDP, batch-norm
statistics, rank-0-only side effects); with one process those hooks do nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import distributed, finish, methods, quant
from . import layers as L
from .augment import apply_augment, augment_pad, augment_params  # noqa: F401 (re-exported)
from .checkpoint import (  # noqa: F401  (re-exported: train's public names)
    CHECKPOINT,
    CHECKPOINT_KEYS,
    CheckpointError,
    first_line,
    load_checkpoint,
    load_portable,
    model_state,
    save_portable,
)
from .data import Dataset, hold_out, load_dataset
from .models import build_model
from .run_files import progress_bar, write_metrics

TRAIN_METHODS = tuple(methods.METHODS)  #: the strategies of host_train.methods


@dataclass
class TrainConfig:
    """Everything that defines a run (saved in the checkpoint)."""

    model: str = "nbq-compact"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    width: float = 1.0
    method: str = "rg"
    bits: int = 3
    bits_per_layer: dict[str, int] = field(default_factory=dict)
    rule: str = "nearest"
    a_schedule: str = "authors"
    a0: float = 0.5
    epochs: int = 15
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "cosine"
    augment: bool = True
    flip: bool | None = None  # None: the dataset's default (mirror-symmetric sets only)
    seed: int = 0
    act_bits: int = 0
    init: str | None = None
    bn_images: int = 1000
    train_limit: int | None = None
    inq_fractions: list[float] = field(default_factory=lambda: [0.5, 0.75, 0.875, 1.0])
    rg_compensate: bool = False
    per_channel: bool = False
    scale_steps: int = 1  #: per-channel scale candidates per octave (> 1: continuous)
    teacher: str | None = None
    distill_weight: float = 0.5
    distill_temperature: float = 4.0
    val_split: int = 0
    ema_decay: float = 0.0  #: > 0: keep a weight average (host_train.finish.WeightAverage)
    finish: str = "none"  #: the final model: one of host_train.finish.FINISHES

    def validate(self) -> None:
        trains = methods.get(self.method).trains
        if not trains and not self.init:
            raise ValueError("method 'rtn' quantizes a trained float model: pass --init CKPT")
        if self.rule not in quant.RULES:
            raise ValueError(f"unknown rule {self.rule!r}; choose one of {quant.RULES}")
        quant.alpha_at(self.a_schedule, 0, max(self.epochs, 1))
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise ValueError("optimizer must be sgd, adam or adamw")
        if self.lr_schedule not in ("cosine", "step", "constant"):
            raise ValueError("lr schedule must be cosine, step or constant")
        if self.epochs < 1 and trains:
            raise ValueError("epochs must be >= 1")
        problem = L.per_channel_problem(self.method, self.rule) if self.per_channel else None
        problem = problem or quant.scale_steps_problem(
            self.scale_steps, self.per_channel, self.rule
        )
        if problem:
            raise ValueError(problem)
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError("the distillation weight must lie in [0, 1]")
        if self.distill_temperature <= 0:
            raise ValueError("the distillation temperature must be > 0")
        if self.val_split < 0:
            raise ValueError("--val-split must be >= 0 images")
        finish.check_finish(self.finish, self.ema_decay)


def saved_config(config: dict) -> dict:
    """A checkpoint's saved config with the fields added since it was written at their
    defaults (what comparing configs must use: old runs keep matching).  ValueError
    names fields this version does not know."""
    unknown = set(config) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ValueError(f"the saved config has fields this version lacks: {sorted(unknown)}")
    return dataclasses.asdict(TrainConfig(**config))


# --- data on tensors -----------------------------------------------------------------
def normalise(x_u8: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 normalised with per-channel mean/std of 0..1 pixels."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x_u8.float() / 255.0 - m) / s


# --- model construction ----------------------------------------------------------------
def make_model(cfg: TrainConfig, ds_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The float model of ``cfg`` converted to power-of-two layers (method set)."""
    model = build_model(cfg.model, num_classes, ds_shape[0], cfg.width)
    if cfg.act_bits:
        L.insert_act_quant(model, cfg.act_bits)
    bits: int | dict[str, int] = cfg.bits
    if cfg.bits_per_layer:
        bits = {"default": cfg.bits, **cfg.bits_per_layer}
    return L.convert(
        model, bits, cfg.rule, cfg.method, per_channel=cfg.per_channel, scale_steps=cfg.scale_steps
    )


def model_from_checkpoint(ckpt: dict) -> tuple[nn.Module, TrainConfig]:
    """The model (eval mode) and training config a :func:`load_checkpoint` dict describes.

    Raises :class:`CheckpointError` when it lacks :data:`CHECKPOINT_KEYS` or its config or
    weights do not make a model.
    """
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing or not isinstance(ckpt["config"], dict) or not isinstance(ckpt["model"], dict):
        what = f"lacks {', '.join(missing)}" if missing else "its config or model is not a dict"
        raise CheckpointError(f"not a model checkpoint written by nbq train: {what}")
    try:
        cfg = TrainConfig(**ckpt["config"])
        model = make_model(cfg, tuple(ckpt["input_shape"]), len(ckpt["classes"]))
        model.load_state_dict(model_state(ckpt))
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"the checkpoint does not make a model: {first_line(exc)}") from None
    model.eval()
    return model, cfg


# --- evaluation ------------------------------------------------------------------------
@torch.no_grad()
def predict(model: nn.Module, x_u8: np.ndarray, mean, std, batch: int = 500) -> np.ndarray:
    """Logits (N, classes) as float32 numpy, model in eval mode."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    outs = []
    for i in range(0, len(x_u8), batch):
        xb = normalise(torch.from_numpy(np.array(x_u8[i : i + batch])), mean, std)
        outs.append(model(xb.to(dev)).cpu().numpy())
    model.train(was)
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, mean, std) -> float:
    return float((predict(model, x, mean, std).argmax(1) == y).mean())


def reestimate_bn(model: nn.Module, x_u8: np.ndarray, mean, std, batch: int = 200) -> None:
    """:func:`host_train.finish.reestimate_bn` with the dataset normalisation (mean, std)."""
    finish.reestimate_bn(model, x_u8, lambda xb: normalise(xb, mean, std), batch)


# --- training --------------------------------------------------------------------------
def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _lr_factor(cfg: TrainConfig, epoch: int) -> float:
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    if cfg.lr_schedule == "step":
        return 0.1 ** (int(epoch >= 0.5 * cfg.epochs) + int(epoch >= 0.75 * cfg.epochs))
    return 1.0


def _inq_fraction(cfg: TrainConfig, epoch: int) -> float:
    """Frozen fraction during ``epoch``: stages spread evenly, all frozen at the end."""
    stages = cfg.inq_fractions
    per = max(cfg.epochs // len(stages), 1)
    return stages[min(epoch // per, len(stages) - 1)] if epoch < cfg.epochs - 1 else 1.0


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_teacher(
    cfg: TrainConfig, ds: Dataset, device: torch.device | str = "cpu"
) -> nn.Module | None:
    """The frozen distillation teacher of ``cfg`` (evaluation mode, on ``device``), or None."""
    if not cfg.teacher:
        return None
    ck = load_checkpoint(cfg.teacher)
    if list(ck["classes"]) != list(ds.classes) or tuple(ck["input_shape"]) != ds.input_shape:
        raise ValueError(f"--teacher {cfg.teacher}: trained on other classes or input shape")
    teacher, _ = model_from_checkpoint(ck)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval().to(device)


def batch_loss(
    cfg: TrainConfig,
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean training loss of a batch: cross-entropy, or with a teacher
    ``(1 - w)·CE + w·T²·KL(teacher_T || student_T)`` (Hinton et al.'s distillation,
    softmaxes at temperature T, w = ``cfg.distill_weight``)."""
    ce = F.cross_entropy(logits, labels)
    if teacher_logits is None:
        return ce
    t = cfg.distill_temperature
    kl = F.kl_div(
        F.log_softmax(logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    w = cfg.distill_weight
    return (1.0 - w) * ce + w * t * t * kl


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    dataset: Dataset | None = None,
    log=print,
    stop_after: int | None = None,
    on_step: Callable[[nn.Module, int], None] | None = None,
) -> dict:
    """Train (or, for ``rtn``, quantize) per ``cfg`` into ``out_dir``; returns the final
    checkpoint dict. With ``resume`` the run continues from ``out_dir/checkpoint.pt``.

    ``stop_after`` ends this call after that many epochs (the run stays resumable: a
    way to train in slices on a shared machine); ``on_step(model, step)`` is called
    after every optimizer step (tests).  Under torchrun every process calls this; see
    :mod:`host_train.distributed` for what each rank does.
    """
    cfg.validate()
    d = distributed.from_env()
    strategy = methods.get(cfg.method)
    if d.active and not strategy.trains:
        raise ValueError("method 'rtn' is one pass over 1,000 images: run it in one process")
    out = Path(out_dir)
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
    ds = dataset or load_dataset(cfg.dataset, cfg.data_dir)
    if cfg.flip is None:
        cfg = dataclasses.replace(cfg, flip=ds.mirror_symmetric)
    train_x, train_y, val_x, val_y = hold_out(ds.train_x, ds.train_y, cfg.val_split)
    if cfg.train_limit:
        train_x, train_y = train_x[: cfg.train_limit], train_y[: cfg.train_limit]
    torch.manual_seed(cfg.seed)
    model = make_model(cfg, ds.input_shape, len(ds.classes))
    if cfg.init:
        init = load_checkpoint(cfg.init)
        missing = model.load_state_dict(init["model"], strict=False)
        if missing.missing_keys:
            raise ValueError(f"--init checkpoint lacks {missing.missing_keys[:3]}...")

    base = {
        "config": dataclasses.asdict(cfg),
        "classes": list(ds.classes),
        "input_shape": list(ds.input_shape),
        "mean": list(ds.mean),
        "std": list(ds.std),
        "dataset": ds.name,
    }
    if not strategy.trains:
        return _post_training_quantize(cfg, model, ds, train_x, out, base, log)

    model.to(d.device)
    teacher = load_teacher(cfg, ds, d.device)
    opt = _optimizer(cfg, model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: _lr_factor(cfg, e))
    ck_path = out / CHECKPOINT
    average = finish.WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
    metrics, start = _resume(ck_path, base, model, opt, sched, average) if resume else ([], 0)
    if resume and d.is_main:
        log(f"resuming at epoch {start + 1}/{cfg.epochs}")

    run = _Run(cfg, d, ds, model, distributed.wrap(model, d), teacher, opt, strategy,
               train_x, train_y, augment_pad(ds.input_shape), on_step, average)  # fmt: skip
    step = start * math.ceil(len(train_y) / cfg.batch_size)
    end = cfg.epochs if stop_after is None else min(cfg.epochs, start + stop_after)
    ck: dict = {}
    for epoch in range(start, end):
        t0 = time.perf_counter()
        alpha, step, sums = _train_epoch(run, epoch, step, progress)
        sched.step()
        tot_loss, tot_ok, seen = distributed.all_sum(sums, d)
        train_s = time.perf_counter() - t0
        ck = {
            **base,
            "epoch": epoch + 1,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "metrics": metrics,
            **({"weight_average": average.state()} if average else {}),
        }
        if not d.is_main:
            continue
        rec = {"epoch": epoch + 1, "alpha": alpha, "lr": opt.param_groups[0]["lr"],
               "train_loss": tot_loss / seen, "train_acc": tot_ok / seen,
               **_accuracies(model, ds, val_x, val_y), "epoch_seconds": train_s,
               "processes": d.world}  # fmt: skip
        metrics.append(rec)
        _save_atomic(ck, ck_path)
        write_metrics(out, metrics)
        log(json.dumps(rec))
    if ck and d.is_main and end == cfg.epochs and (cfg.finish != "none" or average):
        _finish(run, ck, val_x, val_y, ck_path, log)
    distributed.barrier(d)
    if not ck:
        ck = load_checkpoint(ck_path)
    return ck


def _resume(
    ck_path: Path, base: dict, model: nn.Module, opt, sched, average=None
) -> tuple[list[dict], int]:
    """Load ``ck_path`` into the model, optimizer, scheduler (and weight average) of a
    run whose fixed fields are ``base``; return (the metrics so far, the epochs done)."""
    if not ck_path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {ck_path}")
    ck = load_checkpoint(ck_path)
    if saved_config(ck["config"]) != base["config"]:
        raise ValueError("--resume: the checkpoint was made with a different configuration")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    if average is not None:
        average.load(ck["weight_average"])
    return list(ck["metrics"]), int(ck["epoch"])


def _finish(run: _Run, ck: dict, val_x: np.ndarray, val_y: np.ndarray, ck_path: Path, log) -> None:
    """After the last epoch: every treatment of :mod:`host_train.finish` evaluated into
    the last metrics record, ``cfg.finish``'s model saved as ``final_model``."""
    cfg, ds = run.cfg, run.ds
    extra, state = finish.finish_run(
        run.model,
        run.average,
        cfg.finish,
        finish.bn_images(run.train_x, cfg.bn_images, cfg.seed),
        lambda xb: normalise(xb, ds.mean, ds.std),
        lambda m: _accuracies(m, ds, val_x, val_y),
    )
    ck["metrics"][-1].update(extra)
    if state is not None:
        ck["final_model"] = state
    _save_atomic(ck, ck_path)
    write_metrics(ck_path.parent, ck["metrics"])
    log(json.dumps({"finish": cfg.finish, **extra}))


def _accuracies(model: nn.Module, ds: Dataset, val_x: np.ndarray, val_y: np.ndarray) -> dict:
    """``test_acc`` and, with a held-out split, ``val_acc`` (fractions)."""
    rec = {"test_acc": accuracy(model, ds.test_x, ds.test_y, ds.mean, ds.std)}
    if len(val_y):
        rec["val_acc"] = accuracy(model, val_x, val_y, ds.mean, ds.std)
    return rec


@dataclass
class _Run:
    """What every step of one training run uses (built once by :func:`train`)."""

    cfg: TrainConfig
    d: distributed.Dist
    ds: Dataset
    model: nn.Module
    net: nn.Module  #: ``model``, wrapped for several processes where there are
    teacher: nn.Module | None
    opt: torch.optim.Optimizer
    strategy: methods.Method
    train_x: np.ndarray
    train_y: np.ndarray
    pad: int
    on_step: Callable[[nn.Module, int], None] | None
    average: finish.WeightAverage | None = None


def _train_epoch(run: _Run, epoch: int, step: int, progress: bool) -> tuple[float, int, list]:
    """One epoch of optimizer steps; returns (a, the global step count after it, this
    rank's [loss sum, correct, images])."""
    cfg, d, model = run.cfg, run.d, run.model
    alpha = quant.alpha_at(cfg.a_schedule, epoch, cfg.epochs, cfg.a0)
    L.set_alpha(model, alpha)
    pow2 = [m for _, m in L.pow2_layers(model)]
    run.strategy.start_epoch(pow2, _inq_fraction(cfg, epoch))
    gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
    n = len(run.train_y)
    perm = torch.randperm(n, generator=gen)
    run.net.train()
    tot_loss, tot_ok, seen = 0.0, 0, 0
    steps = range(0, n, cfg.batch_size)
    bar = progress_bar(steps, progress and d.is_main, f"epoch {epoch + 1}/{cfg.epochs}")
    for i in bar:
        idx = perm[i : i + cfg.batch_size]
        if cfg.augment:
            aug = augment_params(len(idx), gen, run.pad)
        step += 1
        if len(idx) < d.world:  # a last batch too small to give every rank an image
            continue
        part = distributed.shard(len(idx), d)
        local = idx[part].numpy()
        xb = normalise(torch.from_numpy(run.train_x[local]), run.ds.mean, run.ds.std)
        if cfg.augment:
            xb = apply_augment(xb, *(a[part] for a in aug), run.pad, bool(cfg.flip))
        yb = torch.from_numpy(run.train_y[local])
        xb, yb = xb.to(d.device), yb.to(d.device)
        logits = run.net(xb)
        t_logits = None
        if run.teacher is not None:
            with torch.no_grad():
                t_logits = run.teacher(xb)
        loss = batch_loss(cfg, logits, yb, t_logits)
        weight = distributed.loss_weight(len(local), len(idx), d)
        run.opt.zero_grad(set_to_none=True)
        (loss * weight if weight != 1.0 else loss).backward()
        run.strategy.adjust_gradients(pow2, alpha, cfg.rg_compensate)
        run.opt.step()
        if run.average is not None:
            run.average.update(model)
        distributed.average_bn_stats(model, d)
        if run.on_step is not None:
            run.on_step(model, step)
        tot_loss += float(loss.detach()) * len(local)
        tot_ok += int((logits.argmax(1) == yb).sum())
        seen += len(local)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{tot_loss / seen:.4f}", a=f"{alpha:.3f}")
    return alpha, step, [tot_loss, tot_ok, seen]


def _post_training_quantize(cfg, model, ds, train_x, out, base, log) -> dict:
    """Round-to-nearest quantisation of a trained float model, BN re-estimated."""
    L.set_method(model, "rtn")
    before = accuracy(model, ds.test_x, ds.test_y, ds.mean, ds.std)
    reestimate_bn(model, finish.bn_images(train_x, cfg.bn_images, cfg.seed), ds.mean, ds.std)
    after = accuracy(model, ds.test_x, ds.test_y, ds.mean, ds.std)
    rec = {"epoch": 0, "test_acc": after, "test_acc_before_bn_reestimate": before}
    log(json.dumps(rec))
    ck = {**base, "epoch": 0, "model": model.state_dict(), "metrics": [rec]}
    _save_atomic(ck, out / CHECKPOINT)
    write_metrics(out, [rec])
    return ck
