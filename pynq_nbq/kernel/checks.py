"""Check before use: can this kernel (its read-only registers) run a layer or a bundle?

The rules themselves live in :mod:`pynq_nbq.datapath` (accumulator width, requant
ranges, weight widths, what the conv engine takes); this module compares a layer's
or a bundle's needs with what the kernel's registers say it has.
"""

from __future__ import annotations

import numpy as np

from .. import datapath as dp
from ..bundle import Manifest
from ..ops import ConvSpec
from .protocol import KernelInfo


def conv_weights_for(spec: ConvSpec, info: KernelInfo) -> np.ndarray:
    """Check ``spec`` against the kernel and return what the weight packet carries.

    Returns svpe codes (int8) or vpe weights (int64).  Raises ValueError naming the
    first limit the layer breaks (PE kind, conv shape, input channels, accumulator
    width, requant range, code range).
    """
    where = f"layer {spec.name!r}"
    if spec.datapath is not info.pe:
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
    max_w = max(int(np.abs(spec.weights).max(initial=0)), 1)
    overflow = dp.accumulator_problem(spec.fan_in, max_w, info.acc_bits)
    if overflow:
        raise ValueError(f"{where}: {overflow} (the kernel's ACC_BITS register)")
    problems = dp.requant_problems(spec.mult, spec.bias, spec.shift)
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))
    if info.pe is dp.PEKind.SVPE:
        codes = spec.codes
        if codes is None:
            codes = dp.encode_svpe(spec.weights, dp.SVPE_MAX_BITS)
        try:  # the kernel's code field holds the widest codes (protocol.MAX_CODE_MAG)
            dp.check_svpe_codes(codes, dp.SVPE_MAX_BITS)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if not np.array_equal(dp.decode_svpe(codes, dp.SVPE_MAX_BITS), spec.weights):
            raise ValueError(f"{where}: svpe codes and weights disagree")
        return np.asarray(codes)
    w = spec.weights.astype(np.int64)
    if w.size and (w.min() < dp.VPE_WEIGHT_MIN or w.max() > dp.VPE_WEIGHT_MAX):
        raise ValueError(f"{where}: vpe weights outside the int16 range")
    return w


def check_manifest(manifest: Manifest, info: KernelInfo) -> None:
    """Refuse a bundle this kernel cannot run, with one message listing every reason.

    ``manifest`` is the validated, typed manifest (``bundle.spec``).  Checks its PE
    kind against PE_KIND, its weight width (:func:`datapath.weight_bits_problem`) and
    each layer the conv engine takes (:attr:`bundle.LayerSpec.on_conv_engine`) against
    WEIGHT_BITS, MAX_CIN and ACC_BITS.
    """
    problems = []
    pe = manifest.pe
    if pe is not info.pe:
        problems.append(
            f"the bundle's datapath is '{pe}' but the kernel's PE_KIND register says "
            f"'{info.pe}' (use the {pe} bitstream/build, or a {info.pe} bundle)"
        )
    bits = dp.weight_bits_problem(pe, manifest.weight_bits)
    if bits:
        problems.append(bits)
    for layer in manifest.layers:
        if not layer.on_conv_engine:
            continue  # runs on the ARM cores
        cin = layer.in_shape[0]
        if layer.weight_bits is not None and layer.weight_bits > info.code_bits:
            problems.append(
                f"layer {layer.name!r}: {layer.weight_bits}-bit weights > WEIGHT_BITS "
                f"{info.code_bits} (use a build with a wider code, e.g. NBQ_CODE_BITS=5)"
            )
        if cin > info.max_cin:
            problems.append(f"layer {layer.name!r}: {cin} input channels > MAX_CIN {info.max_cin}")
        if layer.acc_bits is not None and layer.acc_bits > info.acc_bits:
            problems.append(
                f"layer {layer.name!r}: acc_bits {layer.acc_bits} > ACC_BITS {info.acc_bits}"
            )
    if problems:
        raise ValueError(
            f"bundle {manifest.name!r} cannot run on this nbq_conv kernel ({info.pe}, "
            f"Pm={info.pm}, Pn={info.pn}, MAX_CIN={info.max_cin}, ACC_BITS={info.acc_bits}): "
            + "; ".join(problems)
        )
