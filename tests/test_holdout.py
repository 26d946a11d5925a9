"""Hold-out check: a slow reference written from docs/datapath.md (tests/reference_net.py,
no pynq_nbq code) agrees bit for bit with the engine on random bundles covering every op,
n = 1..5 and vpe, edge values - from int16 inputs and from pixels through preprocessing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import reference_net as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pynq_nbq import api
from pynq_nbq import datapath as dp
from pynq_nbq.bundle import BundleError, load_bundle
from pynq_nbq.engine import Engine
from pynq_nbq.testing import random_graph_bundle

KINDS = [("svpe", n) for n in dp.SVPE_BITS] + [("vpe", 16)]


def _plain(path):
    """The bundle as the doc describes it: manifest JSON and arrays as nested lists."""
    manifest = json.loads((path / "manifest.json").read_text())
    with np.load(path / "arrays.npz", allow_pickle=False) as z:
        arrays = {k: z[k].tolist() for k in z.files}
    return manifest, arrays


@pytest.fixture(scope="module", params=[(k, e) for k in KINDS for e in (False, True)])
def graph(request, tmp_path_factory):
    (datapath, n), edge = request.param
    path = tmp_path_factory.mktemp("g") / f"{datapath}{n}-{edge}"
    random_graph_bundle(path, datapath, n, seed=n + 10 * edge, edge=edge)
    return load_bundle(path), _plain(path)


def test_every_op_is_covered(graph):
    bundle, _ = graph
    assert {ly["op"] for ly in bundle.layers} == {
        "conv", "linear", "maxpool", "gap", "add", "concat", "flatten"
    }  # fmt: skip


def test_engine_equals_reference_from_int16(graph):
    bundle, (manifest, arrays) = graph
    rng = np.random.default_rng(7)
    c, h, w = manifest["tensors"]["input"]["shape"]
    x = np.stack(
        [
            rng.integers(dp.ACT_MIN, dp.ACT_MAX + 1, (c, h, w)),
            rng.choice([dp.ACT_MIN, dp.ACT_MAX, -1, 0, 1], (c, h, w)),  # saturating edges
        ]
    ).astype(np.int16)
    got = Engine(bundle).run(x)
    for i in range(len(x)):
        want = ref.run(manifest, arrays, x[i].transpose(1, 2, 0).tolist())
        assert got[i].tolist() == want


def test_engine_equals_reference_from_pixels(graph):
    bundle, (manifest, arrays) = graph
    spec = manifest["input"]
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 256, (13, 10, 3), dtype=np.uint8), "RGB")
    got = api.Model(bundle).classify([img]).logits_q[0]
    # the doc's input steps: Pillow BILINEAR resize to width x height, then exact rationals
    px = np.asarray(img.resize((spec["width"], spec["height"]), Image.Resampling.BILINEAR))
    frac = manifest["tensors"][spec["tensor"]]["frac"]
    x = ref.input_from_pixels(px.transpose(2, 0, 1).tolist(), spec["mean"], spec["std"], frac)
    assert got.tolist() == ref.run(manifest, arrays, x)


@settings(max_examples=60, deadline=None)
@given(
    mean=st.floats(-2, 2, allow_nan=False),
    std=st.floats(1e-3, 4),
    frac=st.integers(dp.FRAC_MIN, dp.FRAC_MAX),
)
def test_pixel_table_is_the_doc_formula(mean, std, frac):
    table = dp.pixel_table(mean, std, frac)
    want = ref.input_from_pixels([[list(range(256))]], [mean], [std], frac)
    assert table.tolist() == [v[0] for v in want[0]]


def test_pixel_table_differs_from_float32_where_float32_is_wrong():
    """The old float32 path (/255, then (a - mean)/std, then float64 floor(x*2^f + 0.5))
    misrounds some pixel values of the embedded model; the exact table does not."""
    spec = api.load_model().input_spec
    frac = api.load_model().engine.input_frac
    p = np.arange(256, dtype=np.float32)
    old = dp.quantize_real(
        (p / 255.0 - np.float32(spec["mean"][0])) / np.float32(spec["std"][0]), frac
    )
    exact = ref.input_from_pixels([[list(range(256))]], spec["mean"], spec["std"], frac)
    exact = np.array([v[0] for v in exact[0]])
    assert np.array_equal(dp.pixel_table(spec["mean"][0], spec["std"][0], frac), exact)
    assert np.abs(old.astype(int) - exact).max() <= 1  # float32 is at most one LSB off


def _mutations(m: dict, rng) -> list[tuple[str, dict]]:
    """Edited copies of a manifest, each breaking (or not) one layer rule of the doc."""
    out = []
    for i, layer in enumerate(m["layers"]):
        for key, value in (("padding", 1), ("ceil_mode", True), ("dilation", 2), ("pool", 2),
                           ("relu", False), ("kernel", 2)):  # fmt: skip
            e = json.loads(json.dumps(m))
            e["layers"][i][key] = value
            out.append((f"{layer['name']}.{key}={value}", e))
        for key in ("in_shape", "out_shape"):
            e = json.loads(json.dumps(m))
            s = e["layers"][i][key]
            s[int(rng.integers(len(s)))] += 1
            out.append((f"{layer['name']}.{key}+1", e))
    e = json.loads(json.dumps(m))
    e["weight_bits"] = min(e["weight_bits"] + 1, 5) if e["datapath"] == "svpe" else 16
    out.append(("weight_bits+1", e))
    return out


def test_loader_refuses_exactly_what_the_doc_refuses(graph, tmp_path):
    """Each mutation: the loader refuses it iff the hold-out's doc rules do (arrays and
    checksums unchanged; the numbers rules are tested elsewhere)."""
    bundle, (manifest, _) = graph
    rng = np.random.default_rng(0)
    accepted = refused = 0
    for what, edited in _mutations(manifest, rng):
        d = tmp_path / "b"
        d.mkdir(exist_ok=True)
        (d / "arrays.npz").write_bytes((bundle.path / "arrays.npz").read_bytes())
        (d / "manifest.json").write_text(json.dumps(edited))
        doc = ref.layer_problems(edited)
        try:
            load_bundle(d)
            loaded = True
        except BundleError:
            loaded = False
        verdict = "accepts" if loaded else "refuses"
        assert loaded == (not doc), f"{what}: the loader {verdict}, the doc says {doc}"
        accepted += loaded
        refused += not loaded
    assert accepted > 5 and refused > 50  # both verdicts occur
