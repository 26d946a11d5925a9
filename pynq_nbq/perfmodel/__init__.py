"""Analytic performance, resource and power model of the conv engine (all outputs modelled).

After Chen et al., IEEE TNNLS 2021, section V (Eq. 35-44, Tables VII-VIII), with
the extensions described in ``docs/perfmodel.md``: LUT/FF/BRAM limits, layers on
the ARM cores, power and energy per image.  Pure Python; never imports torch.

    >>> from pynq_nbq.perfmodel import builtin_network, model_network
    >>> r = model_network(builtin_network("nbq-fmnist"), "zcu102", pe="svpe")
    >>> r["modelled"], r["total"]["latency_ms"] > 0
    (True, True)
"""

from __future__ import annotations

from . import equations
from .boards import ArmCores, Board, available_boards, board_from_dict, load_board
from .layers import (
    Layer,
    layer_from_dict,
    layers_from_list,
    layers_from_manifest,
    layers_from_specs,
)
from .model import (
    MODEL_NOTE,
    ModelOptions,
    engine_takes,
    estimate_energy_per_image,
    model_network,
    placement,
)
from .networks import NETWORKS, builtin_network
from .power import array_dynamic_w, engine_dynamic_w
from .resources import Parallelism, array_cost, choose_parallelism, fabric_reserve

__all__ = [
    "MODEL_NOTE",
    "NETWORKS",
    "ArmCores",
    "Board",
    "Layer",
    "ModelOptions",
    "Parallelism",
    "array_cost",
    "array_dynamic_w",
    "available_boards",
    "board_from_dict",
    "builtin_network",
    "choose_parallelism",
    "engine_dynamic_w",
    "engine_takes",
    "equations",
    "estimate_energy_per_image",
    "fabric_reserve",
    "layer_from_dict",
    "layers_from_list",
    "layers_from_manifest",
    "layers_from_specs",
    "load_board",
    "model_network",
    "placement",
]
