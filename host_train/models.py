"""Networks: the paper's all-conv n-BQ-NN (Table I), its compact 28x28 variant, and a
small residual/concat network that exercises every operation the datapath has.

Models are built from plain ``nn.Conv2d``/``nn.Linear`` (no bias) followed by batch
norm; :func:`host_train.layers.convert` turns them into power-of-two networks.
"""

from __future__ import annotations

import torch
from torch import nn

#: Table I of the paper: (out_channels, kernel) or "M" for a 2x2 max-pool;
#: "C" stands for the number of classes.  Followed by global average pooling.
TABLE_I: list = [
    (128, 3),
    (128, 3),
    (128, 3),
    "M",
    (256, 3),
    (256, 3),
    (256, 3),
    "M",
    (512, 3),
    (1024, 1),
    ("C", 1),
]
#: Compact variant for 28x28 inputs: ~21.9 M multiply-accumulates per image.
COMPACT: list = [(32, 3), (32, 3), "M", (64, 3), (64, 3), "M", (128, 3), ("C", 1)]


class AllConvNet(nn.Module):
    """conv-BN-ReLU stack from a config list, last conv without ReLU, then GAP.

    Input (N, in_channels, H, W); output logits (N, num_classes).
    """

    def __init__(
        self, config: list, num_classes: int = 10, in_channels: int = 3, width: float = 1.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, item in enumerate(config):
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out, k = item
            last = i == len(config) - 1
            out = num_classes if out == "C" else max(1, int(round(out * width)))
            layers += [nn.Conv2d(c, out, k, padding=k // 2, bias=False), nn.BatchNorm2d(out)]
            if not last:
                layers.append(nn.ReLU(inplace=True))
            c = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool(self.features(x)))


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    mods: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        mods.append(nn.ReLU(inplace=True))
    return nn.Sequential(*mods)


class TinyResNet(nn.Module):
    """A small network with residual adds, a strided conv, a 1x1 shortcut, a channel
    concatenation, a standalone max-pool and a fully connected classifier: every
    operation of the datapath in one model (~1.3 M MACs at 28x28)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        w = width
        self.stem = conv_bn(in_channels, w, 3)
        self.b1 = nn.Sequential(conv_bn(w, w, 3), conv_bn(w, w, 3, relu=False))
        self.pool = nn.MaxPool2d(2)
        self.down = nn.Sequential(
            conv_bn(w, 2 * w, 3, stride=2), conv_bn(2 * w, 2 * w, 3, relu=False)
        )
        self.short = conv_bn(w, 2 * w, 1, stride=2, relu=False)
        self.branch = conv_bn(2 * w, w, 1)
        self.mix = conv_bn(3 * w, 2 * w, 1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2 * w, num_classes, bias=False)
        self.fc_bn = nn.BatchNorm1d(num_classes)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.relu(x + self.b1(x))
        x = self.pool(x)
        x = self.relu(self.down(x) + self.short(x))
        x = torch.cat([x, self.branch(x)], dim=1)
        x = self.mix(x)
        return self.fc_bn(self.fc(self.flatten(self.gap(x))))


MODELS = ("nbq-compact", "nbq-table1", "tiny-resnet")


def build_model(
    name: str, num_classes: int = 10, in_channels: int = 1, width: float = 1.0
) -> nn.Module:
    """A float model by name (see :data:`MODELS`)."""
    if name == "nbq-compact":
        return AllConvNet(COMPACT, num_classes, in_channels, width)
    if name == "nbq-table1":
        return AllConvNet(TABLE_I, num_classes, in_channels, width)
    if name == "tiny-resnet":
        return TinyResNet(num_classes, in_channels, max(1, int(round(16 * width))))
    raise ValueError(f"unknown model {name!r}; choose one of {MODELS}")


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one image through every Conv2d/Linear of ``model``."""
    total = 0

    def hook(mod: nn.Module, inp, out) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total += out[0].numel() * k
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    model.train(was)
    for h in handles:
        h.remove()
    return total
