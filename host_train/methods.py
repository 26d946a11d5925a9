"""Training methods as small strategy objects: what a power-of-two layer computes with
its float latent weights W, and what the trainer does around each epoch and step.

=========  ==========================================================================
method     weights used in training (evaluation always uses staircase(W), except float)
=========  ==========================================================================
float      W itself (a float model in the same code)
rg         the reconstructed-gradient blend (1-a)*staircase(W) + a*W (paper Eq. 12-17)
ste        staircase(W) with a straight-through gradient
inq        INQ: a growing mask of weights frozen at staircase values, the rest float
rtn        round to nearest: staircase(W), no training (post-training quantisation
           of a trained float model; batch norm re-estimated)
=========  ==========================================================================

One vocabulary: these names are used by ``nbq train --method``, the layers
(``PowerOfTwoMixin.method``) and checkpoints alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import quant


class Method:
    """The default strategy: staircase(W) in both modes, nothing around the steps."""

    name = ""  #: the method's name in the one vocabulary (set by each subclass)
    trains = True  #: False: the run only quantises a trained model (no epochs)

    def train_weight(self, layer: Any, w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """The weight a layer uses in training mode (``q`` = staircase(W))."""
        return q

    def eval_weight(self, layer: Any, w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """The weight a layer uses in evaluation mode."""
        return q

    def start_epoch(self, layers: Sequence[Any], fraction: float) -> None:
        """Before each epoch (``fraction``: INQ's share of frozen weights)."""

    def adjust_gradients(self, layers: Sequence[Any], alpha: float, compensate: bool) -> None:
        """After backward, before the optimizer step."""


class Float(Method):
    name = "float"

    def train_weight(self, layer, w, q):
        return w

    def eval_weight(self, layer, w, q):
        return w


class ReconstructedGradient(Method):
    name = "rg"

    def train_weight(self, layer, w, q):
        return quant.ReconstructedGradient.apply(w, q, layer.alpha)

    def adjust_gradients(self, layers, alpha, compensate):
        if compensate and alpha > 0:  # undo the a-scaling of the latent weights' step
            for m in layers:
                if m.weight.grad is not None:
                    m.weight.grad.div_(alpha)


class StraightThrough(Method):
    name = "ste"

    def train_weight(self, layer, w, q):
        return quant.StraightThrough.apply(w, q)


class Incremental(Method):
    name = "inq"

    def train_weight(self, layer, w, q):
        return layer.inq_mask * q + (1 - layer.inq_mask) * w  # frozen weights: no gradient

    def eval_weight(self, layer, w, q):
        return layer.inq_mask * q + (1 - layer.inq_mask) * w.detach()

    def start_epoch(self, layers, fraction):
        for m in layers:
            m.inq_freeze(fraction)

    def adjust_gradients(self, layers, alpha, compensate):
        for m in layers:
            if m.weight.grad is not None:
                m.weight.grad.mul_(1 - m.inq_mask)


class RoundToNearest(Method):
    name = "rtn"
    trains = False


#: every method by name, in the order ``--help`` lists them
METHODS: dict[str, Method] = {
    m.name: m
    for m in (Float(), ReconstructedGradient(), StraightThrough(), Incremental(), RoundToNearest())
}


def get(name: str) -> Method:
    """The strategy called ``name``; ValueError naming the choices."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {tuple(METHODS)}") from None
