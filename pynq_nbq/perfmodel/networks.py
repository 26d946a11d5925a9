"""Built-in layer lists for ``nbq perf --network NAME``."""

from __future__ import annotations

from typing import Any

from .layers import Layer, layers_from_list


def _conv(name: str, out: int, k: int = 3, **kw: Any) -> dict[str, Any]:
    return {"name": name, "kind": "conv", "out_channels": out, "kernel": k, **kw}


def _chw(c: int, h: int, w: int) -> dict[str, int]:
    return {"in_channels": c, "in_height": h, "in_width": w}


#: AlexNet's five conv layers as in the paper's Table VIII (227x227x3 input; conv2, 4
#: and 5 in two groups).  Pools, LRN/BN and FC layers left out: the paper's per-layer
#: figures cover the convolutions only.  About 1.33 GOP.
ALEXNET_CONV = [
    _conv("conv1", 96, 11, stride=4, padding=0, **_chw(3, 227, 227)),
    _conv("conv2", 256, 5, padding=2, groups=2, **_chw(96, 27, 27)),
    _conv("conv3", 384, 3, padding=1, **_chw(256, 13, 13)),
    _conv("conv4", 384, 3, padding=1, groups=2, **_chw(384, 13, 13)),
    _conv("conv5", 256, 3, padding=1, groups=2, **_chw(384, 13, 13)),
]

#: The whole AlexNet: conv layers, 3x3/2 max-pools, and the three FC layers (on the ARM).
ALEXNET_FULL = [
    ALEXNET_CONV[0],
    {"name": "pool1", "kind": "maxpool", "kernel": 3, "stride": 2},
    {k: v for k, v in ALEXNET_CONV[1].items() if not k.startswith("in_")},
    {"name": "pool2", "kind": "maxpool", "kernel": 3, "stride": 2},
    *({k: v for k, v in d.items() if not k.startswith("in_")} for d in ALEXNET_CONV[2:]),
    {"name": "pool5", "kind": "maxpool", "kernel": 3, "stride": 2},
    {"name": "flatten", "kind": "flatten"},
    {"name": "fc6", "kind": "linear", "out_features": 4096},
    {"name": "fc7", "kind": "linear", "out_features": 4096},
    {"name": "fc8", "kind": "linear", "out_features": 1000},
]

#: The paper's n-BQ-NN (Table I) for CIFAR-10: all 3x3 convs, no FC layer.
NBQ_CIFAR = [
    _conv("conv1", 128, **_chw(3, 32, 32)),
    _conv("conv2", 128),
    _conv("conv3", 128),
    {"name": "pool1", "kind": "maxpool"},
    _conv("conv4", 256),
    _conv("conv5", 256),
    _conv("conv6", 256),
    {"name": "pool2", "kind": "maxpool"},
    _conv("conv7", 512),
    _conv("conv8", 1024, 1),
    _conv("conv9", 10, 1),
    {"name": "gap", "kind": "gap"},
]

#: The project's compact Fashion-MNIST network (about 22 M MACs per 28x28 image).
NBQ_FMNIST = [
    _conv("conv1", 32, **_chw(1, 28, 28)),
    _conv("conv2", 32),
    {"name": "pool1", "kind": "maxpool"},
    _conv("conv3", 64),
    _conv("conv4", 64),
    {"name": "pool2", "kind": "maxpool"},
    _conv("conv5", 128),
    _conv("conv6", 10, 1),
    {"name": "gap", "kind": "gap"},
]

#: The paper's 4.1x example: one 3x3 conv, 32x32x3 input, N = 128.
PAPER_EXAMPLE = [_conv("conv", 128, **_chw(3, 32, 32))]

NETWORKS: dict[str, list[dict[str, Any]]] = {
    "alexnet": ALEXNET_CONV,
    "alexnet-full": ALEXNET_FULL,
    "nbq-cifar": NBQ_CIFAR,
    "nbq-fmnist": NBQ_FMNIST,
    "paper-example": PAPER_EXAMPLE,
}


def builtin_network(name: str) -> list[Layer]:
    """The layers of a built-in network; ``ValueError`` names the known ones."""
    key = name.strip().lower()
    if key not in NETWORKS:
        raise ValueError(f"unknown network {name!r}: built-ins are {', '.join(NETWORKS)}")
    return layers_from_list([dict(d) for d in NETWORKS[key]])
