"""The table of ops: a toy op registered in one entry runs through validation, the
engine and the performance model; every built-in op is in the table exactly once."""

from __future__ import annotations

import numpy as np
import pytest

from pynq_nbq import datapath as dp
from pynq_nbq import opset
from pynq_nbq.bundle import BundleError, load_bundle, save_bundle
from pynq_nbq.engine import Engine
from pynq_nbq.perfmodel import layers_from_specs, model_network
from pynq_nbq.testing import layer_entry, random_bundle, random_bundle_parts


def _clamp_step(layer, ins, conv):
    return np.clip(ins[0], layer.param("lo"), layer.param("hi")).astype(dp.ACT_DTYPE)


def _same_shape(attrs, in_shapes):
    if attrs["lo"] > attrs["hi"]:
        raise opset.OpError(f"lo {attrs['lo']} > hi {attrs['hi']}")
    return tuple(in_shapes[0])


#: the whole op: one entry (attributes, shape rule, engine step, cost hook)
CLAMP = opset.OpSpec(
    "clamp",
    (
        opset.Attr("lo", int, minimum=dp.ACT_MIN),
        opset.Attr("hi", int, default=dp.ACT_MAX),
    ),
    _same_shape,
    _clamp_step,
    keeps_format=True,
    arm_ops=lambda layer: int(np.prod(layer.out_shape)),
)


def _with_clamp(lo: int, **extra):
    """random_bundle's manifest with a clamp on the logits."""
    m, arrays = random_bundle_parts(seed=3)
    m["tensors"]["clamped"] = dict(m["tensors"]["gap"])
    m["layers"].append(layer_entry("clamp", "clamped", ["gap"], m["tensors"], lo=lo, **extra))
    m["output"] = "clamped"
    return m, arrays


def test_a_toy_op_in_one_entry_runs_through_validation_engine_and_perf_model(tmp_path):
    plain = random_bundle(tmp_path / "plain", seed=3)
    x = np.random.default_rng(0).integers(0, 256, (4, 1, 28, 28), dtype=np.uint8)
    eng = Engine(plain)
    want = eng.run(eng.quantize_input(x))
    lo = int(np.median(want))
    with opset.registered(CLAMP):
        m, arrays = _with_clamp(lo)
        b = load_bundle(save_bundle(m, arrays, tmp_path / "clamp").path)
        layer = b.view.layers[-1]
        assert layer.op == "clamp" and layer.param("lo") == lo and layer.param("hi") == dp.ACT_MAX
        eng = Engine(b)
        got = eng.run(eng.quantize_input(x))
        np.testing.assert_array_equal(got, np.maximum(want, lo))
        assert eng.placements[-1] == ("clamped", "clamp", "arm")
        perf = model_network(layers_from_specs(b.view.layers), "zcu102", "svpe", 3)
        row = perf["layers"][-1]
        assert row["name"] == "clamped" and row["where"] == "arm" and row["time_us"] > 0
        assert CLAMP.arm_ops is not None and CLAMP.arm_ops(layer) == 10
    with pytest.raises(BundleError, match="unknown op 'clamp'"):
        load_bundle(tmp_path / "clamp")


def test_a_toy_op_attributes_are_checked(tmp_path):
    with opset.registered(CLAMP):
        m, arrays = _with_clamp(5, hi=1)
        with pytest.raises(BundleError, match=r"\(clamped\): lo 5 > hi 1"):
            save_bundle(m, arrays, tmp_path / "a")
        m, arrays = _with_clamp(0, width=3)
        with pytest.raises(BundleError, match=r"does not implement \['width'\]"):
            save_bundle(m, arrays, tmp_path / "b")
        m, arrays = _with_clamp(True)
        with pytest.raises(BundleError, match="lo must be an integer"):
            save_bundle(m, arrays, tmp_path / "c")


def test_registry_holds_the_datapath_ops_once():
    assert set(opset.names()) == {"conv", "linear", "maxpool", "gap", "add", "concat", "flatten"}
    with pytest.raises(ValueError, match="already registered"):
        opset.register(opset.get("gap"))
    with pytest.raises(opset.OpError, match="unknown op 'nope'"):
        opset.get("nope")
    for name in opset.names():
        spec = opset.get(name)
        assert (spec.weight_shape is not None) == spec.weighted, name
