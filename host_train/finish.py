"""After the last epoch: batch-norm re-estimation and a weight average, and which of
them becomes the run's model.

Two treatments against the gap between a power-of-two network and float (issue 28),
both free at inference (the bundle format and the datapath are unchanged):

* **Batch-norm re-estimation** (``bn``): the running statistics are recomputed with the
  weights the exported model uses (the pure staircase for quantised layers) on clean,
  not augmented, training images - the statistics training leaves behind were averaged
  over augmented batches and over weights that kept changing (for quantised layers:
  weights that flip between levels, Nagel et al., "Overcoming oscillations in
  quantization-aware training", ICML 2022).
* **A weight average** (``ema-bn``): an exponential moving average of the parameters
  (for quantised layers the latent float weights, quantised afterwards), kept after
  every optimizer step when ``TrainConfig.ema_decay`` > 0, then batch norm re-estimated
  for it (an average of weights has no statistics of its own; as in SWA, Izmailov et al.
  2018).

:func:`finish_run` evaluates every treatment the run can give on the held-out and test
images (recorded in the last epoch's metrics as ``val_acc_bn``, ``test_acc_ema_bn``, ...:
one training run gives all rows) and stores the one ``TrainConfig.finish`` names as the
checkpoint's ``final_model`` (:func:`host_train.checkpoint.model_state`: what export,
evaluation and agreement load).  Float runs get the same treatments: like for like.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from . import layers as L

#: What a run's final model is: the weights as trained (``none``), the same with batch
#: norm re-estimated (``bn``), the weight average with batch norm re-estimated
#: (``ema-bn``, needs ``ema_decay`` > 0).
FINISHES = ("none", "bn", "ema-bn")


def metric_suffix(finish: str) -> str:
    """The suffix of a treatment's metric keys: ``val_acc`` + suffix (``""`` for none)."""
    return "" if finish == "none" else "_" + finish.replace("-", "_")


def check_finish(finish: str, ema_decay: float) -> None:
    """ValueError naming the problem with a (finish, ema_decay) pair of a config."""
    if finish not in FINISHES:
        raise ValueError(f"unknown finish {finish!r}; choose one of {', '.join(FINISHES)}")
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"--ema-decay must lie in [0, 1), got {ema_decay}")
    if finish == "ema-bn" and ema_decay == 0.0:
        raise ValueError("finish 'ema-bn' needs a weight average: set --ema-decay > 0")


class WeightAverage:
    """Exponential moving average of a model's parameters (float32 copies, CPU or the
    model's device), ``avg = decay * avg + (1 - decay) * p`` after every optimizer step.
    Buffers (batch-norm statistics) are not averaged: :func:`finish_run` re-estimates them.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.avg = {k: p.detach().clone() for k, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, p in model.named_parameters():
            self.avg[k].mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)

    def state(self) -> dict[str, torch.Tensor]:
        """The averages, for the checkpoint (``--resume`` restores them exactly)."""
        return {k: v.detach().cpu().clone() for k, v in self.avg.items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.avg):
            raise ValueError("the checkpoint's weight average does not match the model")
        for k, v in state.items():
            self.avg[k].copy_(v)

    def model(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` holding the averaged parameters (buffers as in ``model``)."""
        out = copy.deepcopy(model)
        with torch.no_grad():
            for k, p in out.named_parameters():
                p.copy_(self.avg[k])
        return out


@torch.no_grad()
def reestimate_bn(
    model: nn.Module, x_u8: np.ndarray, normalise: Callable[[torch.Tensor], torch.Tensor],
    batch: int = 200,
) -> None:  # fmt: skip
    """Recompute every batch norm's running statistics on ``x_u8`` (uint8 images, N x C x
    H x W; cumulative average over all of them), with the weights the model uses at
    evaluation (pure staircase for quantized layers).  ``normalise`` maps a uint8 batch to
    the network's float input."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = {}
    for bn in bns:
        bn.reset_running_stats()
        saved[bn] = bn.momentum
        bn.momentum = None
    # forward in train mode for BN, but quantized layers use eval-time weights
    pow_layers = [m for _, m in L.pow2_layers(model)]
    model.train()
    for m in pow_layers:
        m.train(False)
    dev = next(model.parameters()).device
    for i in range(0, len(x_u8), batch):
        xb = torch.from_numpy(np.ascontiguousarray(x_u8[i : i + batch]))
        model(normalise(xb).to(dev))
    for bn in bns:
        bn.momentum = saved[bn]
    model.eval()


def bn_images(train_x: np.ndarray, count: int, seed: int) -> np.ndarray:
    """The ``count`` training images batch norm is re-estimated on: a fixed random subset
    (seeded by the run's seed), in the split's order."""
    pick = np.random.RandomState(seed).choice(len(train_x), min(count, len(train_x)), False)
    return train_x[np.sort(pick)]


def finish_run(
    model: nn.Module,
    average: WeightAverage | None,
    finish: str,
    images: np.ndarray,
    normalise: Callable[[torch.Tensor], torch.Tensor],
    evaluate: Callable[[nn.Module], dict],
) -> tuple[dict, dict | None]:
    """Every treatment's accuracies and the state dict of ``finish``'s model.

    ``images``: the uint8 training images batch norm is re-estimated on (:func:`bn_images`);
    ``evaluate(model)`` -> ``{"test_acc": .., "val_acc": ..}``.  Returns (metric
    updates keyed ``<metric><suffix>`` for ``bn`` and, with a weight average, ``ema-bn``;
    the chosen model's state dict, or None for ``none``).  ``model`` is not changed.
    """
    variants: dict[str, nn.Module] = {"bn": copy.deepcopy(model)}
    if average is not None:
        variants["ema-bn"] = average.model(model)
    metrics: dict = {}
    for name, net in variants.items():
        reestimate_bn(net, images, normalise)
        metrics.update({k + metric_suffix(name): v for k, v in evaluate(net).items()})
    chosen = variants.get(finish)
    if finish != "none" and chosen is None:
        raise ValueError(f"finish {finish!r} needs a weight average (ema_decay > 0)")
    return metrics, None if chosen is None else chosen.state_dict()
