"""The loader's last gaps (issue 23, contract points 3 and 5): it refuses every
attribute the engine does not implement, checks every shape the manifest states, and
decides the silent points (docs/datapath.md section 4, "Validation")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pynq_nbq import datapath as dp
from pynq_nbq.bundle import BundleError, load_bundle, save_bundle
from pynq_nbq.testing import random_bundle_parts, random_graph_bundle

EMBEDDED = Path(__file__).resolve().parents[1] / "pynq_nbq" / "models" / "fmnist-svpe"


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> Path:
    """A bundle with every op (a standalone maxpool "mp" among them)."""
    return random_graph_bundle(tmp_path_factory.mktemp("g") / "b", seed=1).path


def edited(src: Path, dst: Path, edit) -> Path:
    """A copy of bundle ``src`` at ``dst`` with ``edit(manifest)`` applied to its manifest
    (the arrays, and so every checksum, unchanged)."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    edit(m)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def layer(m: dict, name: str) -> dict:
    return next(ly for ly in m["layers"] if ly["name"] == name)


@pytest.mark.parametrize(
    "name, key, value",
    [
        ("mp", "padding", 1),
        ("mp", "ceil_mode", True),
        ("c1", "dilation", 2),
        ("sum", "alpha", 0.5),
        ("gap", "kernel", 3),
        ("fc1", "pool", 2),
    ],
)
def test_attributes_the_engine_does_not_implement_are_refused(graph, tmp_path, name, key, value):
    b = edited(graph, tmp_path / "b", lambda m: layer(m, name).update({key: value}))
    with pytest.raises(BundleError, match=rf"\({name}\): op '\w+' does not implement \['{key}'\]"):
        load_bundle(b)


def test_an_edited_out_shape_is_refused_naming_the_field(tmp_path):
    def edit(m):
        layer(m, m["layers"][0]["name"])["out_shape"] = [33, 28, 28]

    want = r"layers\[0\] \(features.0\): out_shape \[33, 28, 28\] != shape \[32, 28, 28\]"
    with pytest.raises(BundleError, match=want):
        load_bundle(edited(EMBEDDED, tmp_path / "b", edit))


def test_an_edited_in_shape_is_refused_naming_the_field(graph, tmp_path):
    b = edited(graph, tmp_path / "b", lambda m: layer(m, "cat").update(in_shape=[8, 4, 3]))
    with pytest.raises(BundleError, match=r"\(cat\): in_shape \[8, 4, 3\] != shape \[4, 4, 3\]"):
        load_bundle(b)


def test_a_layer_without_its_shapes_is_refused(graph, tmp_path):
    b = edited(graph, tmp_path / "b", lambda m: layer(m, "gap").pop("out_shape"))
    with pytest.raises(BundleError, match=r"\(gap\): missing field 'out_shape'"):
        load_bundle(b)


def test_a_layer_wider_than_the_bundle_is_refused(tmp_path):
    m, arrays = random_bundle_parts(n_bits=3)
    m["layers"][1]["weight_bits"] = 5
    m["layers"][1]["acc_bits"] = dp.accumulator_bits(8, dp.max_abs_weight("svpe", 5))
    with pytest.raises(BundleError, match=r"weight_bits: layer 'c2' has weight_bits 5, wider"):
        save_bundle(m, arrays, tmp_path / "b")


def test_bundle_weight_bits_is_the_widest_layers(tmp_path):
    m, arrays = random_bundle_parts(n_bits=3)
    m["weight_bits"] = 5
    with pytest.raises(BundleError, match=r"weight_bits: 5 but the widest layer has 3"):
        save_bundle(m, arrays, tmp_path / "b")
    # narrower layers in a wider bundle are fine (mixed precision): c2 at 2 bits
    m, arrays = random_bundle_parts(n_bits=3)
    arrays["c2.weights"] = np.clip(arrays["c2.weights"], -1, 1)
    m["layers"][1]["weight_bits"] = 2
    m["layers"][1]["acc_bits"] = dp.accumulator_bits(8, dp.max_abs_weight("svpe", 2))
    b = save_bundle(m, arrays, tmp_path / "mixed")
    assert [ly.weight_bits for ly in b.view.weighted_layers] == [3, 2, 3]
    assert b.view.weight_bits == 3


def test_acc_bits_follow_the_width_not_the_largest_weight_held(tmp_path):
    m, arrays = random_bundle_parts(n_bits=5, width=8)
    arrays["c2.weights"] = np.clip(arrays["c2.weights"], -2, 2)  # |w| <= 2 held, 2**14 allowed
    m["layers"][1]["acc_bits"] = dp.accumulator_bits(8, 2)
    with pytest.raises(BundleError, match=r"\(c2\): acc_bits \d+ != worst-case bound"):
        save_bundle(m, arrays, tmp_path / "b")


def test_bias_over_2_61_is_refused_with_the_bound(tmp_path):
    m, arrays = random_bundle_parts()
    arrays["c3.mult"][:] = 0  # no overflow from the product: only the bias bound speaks
    arrays["c3.bias"][0] = dp.REQUANT_BIAS_MAX
    save_bundle(m, arrays, tmp_path / "at")  # 2**61 itself is allowed
    arrays["c3.bias"][0] = dp.REQUANT_BIAS_MAX + 1
    with pytest.raises(BundleError, match=r"\(c3\): requantisation \|bias\| over 2\*\*61"):
        save_bundle(m, arrays, tmp_path / "over")


@pytest.mark.parametrize("std", [1e-300, 2.0**-33, 0.0, -1.0])
def test_a_tiny_std_is_refused_with_the_bound(tmp_path, std):
    m, arrays = random_bundle_parts()
    m["input"]["std"] = [std]
    with pytest.raises(BundleError, match=r"manifest.input: std .*(2\*\*-32|positive)"):
        save_bundle(m, arrays, tmp_path / "b")
    with pytest.raises(ValueError):
        dp.pixel_table(0.5, std, 12)


def test_std_at_the_bound_is_accepted_and_saturates(tmp_path):
    m, arrays = random_bundle_parts()
    m["input"]["std"], m["input"]["mean"] = [dp.INPUT_STD_MIN], [0.5]
    b = save_bundle(m, arrays, tmp_path / "b")
    table = dp.pixel_table(0.5, b.view.input.std[0], b.view.input_frac)
    assert table[0] == dp.ACT_MIN and table[255] == dp.ACT_MAX and table[128] == dp.ACT_MAX


def test_a_huge_mean_is_refused_with_the_bound(tmp_path):
    m, arrays = random_bundle_parts()
    m["input"]["mean"] = [1e300]
    with pytest.raises(BundleError, match=r"manifest.input: \|mean\| .* 2\*\*16"):
        save_bundle(m, arrays, tmp_path / "b")
