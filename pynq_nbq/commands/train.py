"""``nbq train``: train a power-of-two (or float) network on a workstation (needs torch).

``--nproc N`` trains with N processes: it writes the run's configuration to
``OUT/launch-config.json`` and starts ``torchrun --standalone --nproc_per_node N -m
host_train --config OUT/launch-config.json --out OUT`` (``host_train.distributed``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from ..cli import CommandError
from ._torch import require_torch


def register(sub) -> None:
    p = sub.add_parser("train", help="train an n-bit power-of-two network (needs torch)")
    p.add_argument("--out", required=True, help="run directory (checkpoint, metrics, curves)")
    p.add_argument(
        "--model",
        default="nbq-compact",
        help="nbq-compact (28x28, ~22 M MACs), nbq-table1, tiny-resnet",
    )
    p.add_argument("--width", type=float, default=1.0, help="width multiplier")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist, digits, cifar10")
    p.add_argument("--data-dir", default=None, help="folder with the dataset's files")
    p.add_argument("--method", default="rg", help="float, rg, ste, inq, rtn (needs --init)")
    p.add_argument("--bits", type=int, default=3, help="weight bits n (1..5)")
    p.add_argument(
        "--bits-per-layer",
        default="",
        help="mixed precision: NAME=BITS,... (names as in the model)",
    )
    p.add_argument("--rule", default="nearest", help="authors, log, nearest, moments")
    p.add_argument("--a-schedule", default="authors", help="authors, constant, linear, cosine")
    p.add_argument("--a0", type=float, default=0.5, help="initial a of the blend")
    p.add_argument(
        "--rg-compensate",
        action="store_true",
        help="divide the latent weights' gradient by a (undo the a-scaled step)",
    )
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="sgd", help="sgd (momentum, Nesterov), adam, adamw")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--lr-schedule", default="cosine", help="cosine, step, constant")
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips (default: on for mirror-symmetric datasets only: "
        "fashion-mnist and cifar10 yes, digits no)",
    )
    p.add_argument(
        "--per-channel",
        action="store_true",
        help="one power-of-two weight scale per output channel (folds into requantisation)",
    )
    p.add_argument(
        "--scale-steps",
        type=int,
        default=1,
        help="with --per-channel: scale candidates per octave, a power of two; 1 = "
        "power-of-two scales, > 1 = a continuous scale 2**(k/S) per channel (MSE-optimal; "
        "folds into the requantisation multiplier)",
    )
    p.add_argument("--teacher", default=None, help="distil from this (float) checkpoint")
    p.add_argument("--distill-weight", type=float, default=0.5, help="weight of the KD term")
    p.add_argument("--distill-temperature", type=float, default=4.0, help="softmax temperature")
    p.add_argument(
        "--val-split",
        type=int,
        default=0,
        help="hold out this many training images (fixed subset) and report val_acc",
    )
    p.add_argument(
        "--ema-decay",
        type=float,
        default=0.0,
        help="keep an exponential moving average of the weights with this decay per step "
        "(e.g. 0.999; 0: off); with it the run also reports the average's accuracy",
    )
    p.add_argument(
        "--finish",
        choices=("none", "bn", "ema-bn"),
        default="none",
        help="the run's final model: as trained (none), batch norm re-estimated on clean "
        "training images (bn), or the weight average with batch norm re-estimated (ema-bn)",
    )
    p.add_argument(
        "--bn-images", type=int, default=1000, help="training images batch norm is re-estimated on"
    )
    p.add_argument("--act-bits", type=int, default=0, help="optional activation bits (0: off)")
    p.add_argument("--init", default=None, help="start from this checkpoint (fine-tune / rtn)")
    p.add_argument("--train-limit", type=int, default=None, help="use the first N images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="train with N processes (torchrun; gloo on CPU, NCCL on GPUs)",
    )
    p.add_argument(
        "--config",
        default=None,
        help="read every training setting from this JSON (a checkpoint's 'config'); "
        "the setting flags are then ignored",
    )
    p.set_defaults(func=run)


def _bits_map(text: str) -> dict[str, int]:
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, bits = item.partition("=")
        if not bits.isdigit():
            raise CommandError(f"--bits-per-layer: expected NAME=BITS, got {item!r}")
        out[name] = int(bits)
    return out


def _config(args: argparse.Namespace):
    from host_train.train import TrainConfig

    if args.config:
        try:
            return TrainConfig(**json.loads(Path(args.config).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise CommandError(f"--config {args.config}: {exc}") from exc
    return TrainConfig(
        model=args.model,
        dataset=args.dataset,
        data_dir=args.data_dir,
        width=args.width,
        method=args.method,
        bits=args.bits,
        bits_per_layer=_bits_map(args.bits_per_layer),
        rule=args.rule,
        a_schedule=args.a_schedule,
        a0=args.a0,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        lr_schedule=args.lr_schedule,
        augment=not args.no_augment,
        flip=args.flip,
        seed=args.seed,
        act_bits=args.act_bits,
        init=args.init,
        train_limit=args.train_limit,
        rg_compensate=args.rg_compensate,
        per_channel=args.per_channel,
        scale_steps=args.scale_steps,
        teacher=args.teacher,
        distill_weight=args.distill_weight,
        distill_temperature=args.distill_temperature,
        val_split=args.val_split,
        ema_decay=args.ema_decay,
        finish=args.finish,
        bn_images=args.bn_images,
    )


def launch_torchrun(cfg, args: argparse.Namespace) -> int:
    """Run this training under ``torchrun`` with ``args.nproc`` processes; returns its
    exit status."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "launch-config.json"
    cfg_path.write_text(json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={args.nproc}",
        "-m",
        "host_train",
        "--config",
        str(cfg_path),
        "--out",
        str(out),
    ]
    cmd += ["--resume"] * args.resume + ["--quiet"] * args.quiet
    print("launching:", " ".join(cmd), flush=True)
    return subprocess.call(cmd, env=dict(os.environ))


def run(args: argparse.Namespace) -> int:
    require_torch()
    from host_train.data import DatasetMissing
    from host_train.train import train

    cfg = _config(args)
    try:
        cfg.validate()
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    if args.nproc < 1:
        raise CommandError("--nproc must be >= 1")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        rc = launch_torchrun(cfg, args)
        if rc:
            raise CommandError(f"torchrun exited with status {rc}")
        return 0
    try:
        ck = train(cfg, args.out, resume=args.resume, progress=not args.quiet)
    except (ValueError, FileNotFoundError, DatasetMissing) as exc:
        raise CommandError(str(exc)) from exc
    from host_train import distributed

    distributed.shutdown()  # a torchrun rank leaves its group together with the others
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    last = ck["metrics"][-1] if ck.get("metrics") else {}
    acc = last.get("test_acc", float("nan"))
    print(f"done: test accuracy {100 * acc:.2f}% -> {args.out}")
    note = short_run_note(acc, cfg.epochs)
    if note:
        print(note, file=sys.stderr)
    return 0


#: Below this test accuracy after fewer than SHORT_RUN_EPOCHS epochs, ``nbq train`` says the
#: run was too short: a 3-bit digits run reaches >= 90 % in 20 epochs
#: (tests/test_train.py::test_digits_rg_3bit_reaches_90_and_beats_round_to_nearest), a
#: 2-epoch one stays near 40 %.
LOW_ACCURACY = 0.80
SHORT_RUN_EPOCHS = 20


def short_run_note(test_acc: float, epochs: int) -> str | None:
    """A one-line note when a run is short and its accuracy low, else None."""
    if not (test_acc < LOW_ACCURACY and epochs < SHORT_RUN_EPOCHS):  # NaN: no note
        return None
    return (
        f"note: {100 * test_acc:.1f}% after {epochs} epoch{'s' * (epochs != 1)} says little "
        f"about the method: short runs stay low (a 3-bit digits run reaches 90% in "
        f"{SHORT_RUN_EPOCHS} epochs); train with --epochs {SHORT_RUN_EPOCHS} or more"
    )
