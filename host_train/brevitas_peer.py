"""A peer trains, we deploy: a Brevitas network with power-of-two weights -> QONNX -> bundle.

The weight quantizer is Brevitas's OCP minifloat with **no mantissa bits**
(:class:`Po2Weight`, 3 bits: sign + 2 exponent bits, exponent bias 4, scale 1): its
values are exactly ``{0, +-2**-3, +-2**-2, +-2**-1}`` - the paper's 3-bit levels
``{0, +-2**-i} * 2**e`` with ``e = -1`` - and Brevitas exports it as a ``FloatQuant``
node that states those values, so nothing has to be copied by hand before export.
(Brevitas has no per-weight power-of-two quantizer: its ``PowerOfTwo`` scaling
restricts only the *scale*, and a custom ``tensor_quant`` exports the raw float weights
under an integer ``Quant``.)  Minifloat rounding is in the linear domain (threshold
``1.5 * 2**k``, not the geometric ``sqrt(2) * 2**k``) and its zeros come out as -0.0;
neither matters to the import.

Activations are fixed point with a learned power-of-two scale and the datapath's int16
range: the input and the logits :class:`Act16` (signed 16 bits), after each ReLU
:class:`Relu15` (unsigned 15 bits, the int16 range of a non-negative value), so the
import refuses nothing and every clip is the engine's saturation.

    net = make_net()
    train_steps(net, images, labels, steps=50)
    export(net, "peer.onnx")   # then: nbq import peer.onnx --out bundle --mean .. --std ..
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from brevitas import nn as qnn
from brevitas.export import export_qonnx
from brevitas.quant.fixed_point import Int8ActPerTensorFixedPoint, Uint8ActPerTensorFixedPoint
from brevitas.quant.float_quant_ocp import FpOCPWeight
from torch import nn


class Po2Weight(FpOCPWeight):
    """Power-of-two weights {0, +-2**-3, +-2**-2, +-2**-1}: minifloat e2m0, bias 4."""

    bit_width = 3
    exponent_bit_width = 2
    mantissa_bit_width = 0
    exponent_bias = 4


class Act16(Int8ActPerTensorFixedPoint):
    """Signed 16-bit fixed point, power-of-two scale: an int16 tensor of the datapath."""

    bit_width = 16


class Relu15(Uint8ActPerTensorFixedPoint):
    """Unsigned 15-bit fixed point after a ReLU: 0..32767, the int16 range of a ReLU."""

    bit_width = 15


class PeerNet(nn.Module):
    """conv3x3(c1) + ReLU + maxpool2 -> conv3x3(c2) + ReLU + maxpool2 -> linear(10) on
    1 x 28 x 28 inputs (normalised pixels); every weight a power of two."""

    def __init__(self, c1: int = 8, c2: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Act16)
        self.conv1 = qnn.QuantConv2d(1, c1, 3, padding=1, weight_quant=Po2Weight)
        self.relu1 = qnn.QuantReLU(act_quant=Relu15)
        self.conv2 = qnn.QuantConv2d(c1, c2, 3, padding=1, weight_quant=Po2Weight)
        self.relu2 = qnn.QuantReLU(act_quant=Relu15)
        self.fc = qnn.QuantLinear(c2 * 7 * 7, classes, weight_quant=Po2Weight)
        self.out = qnn.QuantIdentity(act_quant=Act16)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu1(self.conv1(self.inp(x))))
        x = self.pool(self.relu2(self.conv2(x)))
        return self.out(self.fc(torch.flatten(x, 1)))


def make_net(c1: int = 8, c2: int = 16, seed: int = 0) -> PeerNet:
    torch.manual_seed(seed)
    return PeerNet(c1, c2)


def normalise(pixels: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """uint8 (N, 1, 28, 28) -> float32 ``(p/255 - mean)/std``."""
    return (torch.from_numpy(np.array(pixels, dtype=np.float32)) / 255.0 - mean) / std


def train_steps(
    net: PeerNet,
    pixels: np.ndarray,
    labels: np.ndarray,
    mean: float,
    std: float,
    steps: int,
    batch: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
) -> float:
    """``steps`` Adam steps of cross-entropy on random batches; returns the last loss."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(net.parameters(), lr)
    net.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = rng.integers(0, len(pixels), batch)
        x, y = normalise(pixels[idx], mean, std), torch.from_numpy(labels[idx]).long()
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return float(loss.detach())


@torch.no_grad()
def fake_quant_logits(net: PeerNet, pixels: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Brevitas's own (fake-quant, float32) inference: logits (N, 10) as float64."""
    net.eval()
    return np.concatenate(
        [
            net(normalise(pixels[i : i + 500], mean, std)).double().numpy()
            for i in range(0, len(pixels), 500)
        ]  # fmt: skip
    )


def export(net: PeerNet, path: str | Path) -> Path:
    """Brevitas's QONNX export (legacy TorchScript exporter: ``dynamo=False`` keeps the
    tensor and node names and emits standard ops)."""
    net.eval()
    export_qonnx(net, torch.zeros(1, 1, 28, 28), export_path=str(path), dynamo=False)
    return Path(path)
