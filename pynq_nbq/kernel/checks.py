"""Check before use: can this kernel (its read-only registers) run a layer or a bundle?"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .. import datapath as dp
from ..ops import ConvSpec
from .protocol import CODE_MAG_BITS, MAX_CODE_MAG, KernelInfo


def conv_weights_for(spec: ConvSpec, info: KernelInfo) -> np.ndarray:
    """Check ``spec`` against the kernel and return what the weight packet carries.

    Returns svpe codes (int8) or vpe weights (int64).  Raises ValueError naming the
    first limit the layer breaks (PE kind, conv shape, input channels, accumulator
    width, code range, requant range).
    """
    where = f"layer {spec.name!r}"
    if spec.datapath != info.pe:
        raise ValueError(
            f"{where} is {spec.datapath} but the kernel's PE_KIND register says {info.pe}"
        )
    if not dp.conv_engine_takes(spec.kernel, spec.stride, spec.padding, spec.groups):
        raise ValueError(
            f"{where}: the conv engine runs 3x3 pad 1 or 1x1 pad 0, stride 1, groups 1; "
            f"got {spec.kernel}x{spec.kernel} pad {spec.padding} stride {spec.stride} "
            f"groups {spec.groups}"
        )
    if spec.in_channels > info.max_cin:
        raise ValueError(
            f"{where} has {spec.in_channels} input channels; the kernel's MAX_CIN register "
            f"allows {info.max_cin} (input channels are never tiled)"
        )
    max_w = int(np.abs(spec.weights).max(initial=0))
    bits = dp.accumulator_bits(spec.fan_in, max(max_w, 1))
    if bits > info.acc_bits:
        raise ValueError(
            f"{where} needs a {bits}-bit accumulator; the kernel's ACC_BITS register is "
            f"{info.acc_bits}"
        )
    problems = dp.requant_problems(spec.mult, spec.bias, spec.shift)
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))
    if info.pe == "svpe":
        codes = spec.codes
        if codes is None:
            codes = dp.encode_svpe(spec.weights, dp.SVPE_MAX_BITS)
        if np.abs(codes.astype(np.int64)).max(initial=0) > MAX_CODE_MAG:
            raise ValueError(f"{where}: svpe codes beyond +-{MAX_CODE_MAG} (n > 5)")
        if not np.array_equal(dp.decode_svpe(codes, dp.SVPE_MAX_BITS), spec.weights):
            raise ValueError(f"{where}: svpe codes and weights disagree")
        return np.asarray(codes)
    w = spec.weights.astype(np.int64)
    if w.size and (w.min() < dp.VPE_WEIGHT_MIN or w.max() > dp.VPE_WEIGHT_MAX):
        raise ValueError(f"{where}: vpe weights outside the int16 range")
    return w


def check_manifest(manifest: Mapping, info: KernelInfo) -> None:
    """Refuse a bundle this kernel cannot run, with one message listing every reason.

    Checks the bundle's ``datapath`` against PE_KIND and each conv layer the engine
    takes (see :func:`datapath.conv_engine_takes`) against MAX_CIN, ACC_BITS and the code width.
    """
    problems = []
    datapath = manifest.get("datapath")
    name = manifest.get("name", "?")
    if datapath != info.pe:
        problems.append(
            f"the bundle's datapath is {datapath!r} but the kernel's PE_KIND register says "
            f"{info.pe!r} (use the {datapath} bitstream/build, or a {info.pe} bundle)"
        )
    bits = manifest.get("weight_bits")
    if datapath == "svpe" and isinstance(bits, int) and bits > 1 + CODE_MAG_BITS:
        problems.append(f"svpe weight_bits {bits} > {1 + CODE_MAG_BITS}")
    for layer in manifest.get("layers", []):
        if layer.get("op") != "conv":
            continue
        k = int(layer.get("kernel", 0))
        if not dp.conv_engine_takes(
            k,
            int(layer.get("stride", 1)),
            int(layer.get("padding", 0)),
            int(layer.get("groups", 1)),
        ):
            continue  # runs on the ARM cores
        cin = int(layer["in_shape"][0])
        if cin > info.max_cin:
            problems.append(
                f"layer {layer.get('name')!r}: {cin} input channels > MAX_CIN {info.max_cin}"
            )
        acc = layer.get("acc_bits")
        if acc is not None and int(acc) > info.acc_bits:
            problems.append(
                f"layer {layer.get('name')!r}: acc_bits {acc} > ACC_BITS {info.acc_bits}"
            )
    if problems:
        raise ValueError(
            f"bundle {name!r} cannot run on this nbq_conv kernel ({info.pe}, Pm={info.pm}, "
            f"Pn={info.pn}, MAX_CIN={info.max_cin}, ACC_BITS={info.acc_bits}): "
            + "; ".join(problems)
        )
