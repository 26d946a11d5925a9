"""Bundle validation: every bad bundle is refused with an error naming the problem."""

import json
import shutil

import numpy as np
import pytest

from pynq_nbq import bundle as B
from pynq_nbq.testing import random_bundle


@pytest.fixture
def good(tmp_path):
    random_bundle(tmp_path / "good", "svpe", 3)
    return tmp_path / "good"


def _rewrite(path, edit_manifest=None, edit_arrays=None, fix_checksums=True):
    m = json.loads((path / B.MANIFEST).read_text())
    with np.load(path / B.ARRAYS, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if edit_arrays:
        edit_arrays(arrays)
    if fix_checksums:
        m["arrays"] = {
            k: {"dtype": str(v.dtype), "shape": list(v.shape), "sha256": B.array_sha256(v)}
            for k, v in arrays.items()
        }
    if edit_manifest:
        edit_manifest(m)
    raw = B.npz_bytes(arrays)
    (path / B.ARRAYS).write_bytes(raw)
    import hashlib

    m["arrays_sha256"] = hashlib.sha256(raw).hexdigest()
    (path / B.MANIFEST).write_text(json.dumps(m))


def test_good_bundle_loads(good):
    b = B.load_bundle(good)
    assert b.datapath == "svpe" and b.weight_bits == 3 and len(b.classes) == 10


def test_bad_json(good):
    (good / B.MANIFEST).write_text("{not json")
    with pytest.raises(B.BundleError, match="bad JSON"):
        B.load_bundle(good)


def test_missing_files(tmp_path, good):
    (good / B.ARRAYS).unlink()
    with pytest.raises(B.BundleError, match="missing arrays.npz"):
        B.load_bundle(good)
    with pytest.raises(B.BundleError, match="not a bundle directory"):
        B.load_bundle(tmp_path / "nope")


def test_wrong_file_checksum(good):
    raw = bytearray((good / B.ARRAYS).read_bytes())
    raw[-30] ^= 0xFF
    (good / B.ARRAYS).write_bytes(bytes(raw))
    with pytest.raises(B.BundleError, match="checksum mismatch"):
        B.load_bundle(good)


def test_wrong_array_checksum(good):
    def edit(m):
        m["arrays"]["c1.bias"]["sha256"] = "0" * 64

    _rewrite(good, edit_manifest=edit)
    with pytest.raises(B.BundleError, match=r"c1.bias.*checksum mismatch"):
        B.load_bundle(good)


def test_missing_and_extra_arrays(tmp_path, good):
    shutil.copytree(good, tmp_path / "g2")
    _rewrite(good, edit_arrays=lambda a: a.pop("c2.mult"), fix_checksums=False)
    with pytest.raises(B.BundleError, match=r"missing arrays \['c2.mult'\]"):
        B.load_bundle(good)
    _rewrite(tmp_path / "g2", edit_arrays=lambda a: a.update(junk=np.zeros(2)), fix_checksums=False)
    with pytest.raises(B.BundleError, match="not in the manifest"):
        B.load_bundle(tmp_path / "g2")


def test_codes_out_of_range(good):
    def edit(a):
        a["c1.weights"][0, 0, 0, 0] = 4  # 3-bit codes are -3..3

    _rewrite(good, edit_arrays=edit)
    with pytest.raises(B.BundleError, match=r"c1.*code magnitude 4 out of range"):
        B.load_bundle(good)


def test_shape_mismatch(good):
    def edit(a):
        a["c2.weights"] = a["c2.weights"][:, :4]

    _rewrite(good, edit_arrays=edit)
    with pytest.raises(B.BundleError, match="weights shape"):
        B.load_bundle(good)


def test_unknown_schema_version(good):
    def edit(m):
        m["schema_version"] = 99

    _rewrite(good, edit_manifest=edit)
    with pytest.raises(B.BundleError, match="schema_version"):
        B.load_bundle(good)


def test_possible_overflow_refused(tmp_path):
    random_bundle(tmp_path / "v", "vpe")

    def edit(m):
        m["layers"][0]["acc_bits"] = 49

    _rewrite(tmp_path / "v", edit_manifest=edit)
    with pytest.raises(B.BundleError, match="acc_bits 49 != worst-case bound"):
        B.load_bundle(tmp_path / "v")


def test_overflowing_layer_refused_at_write(tmp_path):
    from pynq_nbq import datapath as dp

    c = 1 << 18  # 16-bit weights with a fan-in of 2^18 need 49 accumulator bits
    arrays = {
        "c.weights": np.ones((10, c, 1, 1), np.int16),
        "c.mult": np.ones(10, np.int64),
        "c.bias": np.zeros(10, np.int64),
        "c.shift": np.zeros(10, np.int64),
    }
    m = {
        "name": "big",
        "datapath": "vpe",
        "weight_bits": 16,
        "classes": list("abcdefghij"),
        "input": {
            "tensor": "input",
            "channels": c,
            "height": 1,
            "width": 1,
            "mode": "RGB",
            "mean": [0.0] * c,
            "std": [1.0] * c,
        },
        "tensors": {
            "input": {"shape": [c, 1, 1], "frac": 8},
            "c": {"shape": [10, 1, 1], "frac": 8},
            "g": {"shape": [10], "frac": 8},
        },
        "layers": [
            {
                "name": "c",
                "op": "conv",
                "inputs": ["input"],
                "output": "c",
                "in_shape": [c, 1, 1],
                "out_shape": [10, 1, 1],
                "kernel": 1,
                "stride": 1,
                "padding": 0,
                "groups": 1,
                "relu": False,
                "pool": 0,
                "weight_bits": 16,
                "weight_exp": 0,
                "acc_bits": dp.accumulator_bits(c, 1 << 15),
                "arrays": {r: f"c.{r}" for r in ("weights", "mult", "bias", "shift")},
            },
            {
                "name": "g",
                "op": "gap",
                "inputs": ["c"],
                "output": "g",
                "in_shape": [10, 1, 1],
                "out_shape": [10],
            },
        ],
        "output": "g",
    }
    m["input"]["mode"] = "RGB"
    with pytest.raises(B.BundleError, match="possible overflow"):
        B.save_bundle(m, arrays, tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_unknown_op_and_dangling_input(good):
    def edit(m):
        m["layers"][1]["op"] = "softmax"

    _rewrite(good, edit_manifest=edit)
    with pytest.raises(B.BundleError, match="unknown op 'softmax'"):
        B.load_bundle(good)


def test_requant_out_of_range(good):
    def edit(a):
        a["c1.shift"][0] = 63

    _rewrite(good, edit_arrays=edit)
    with pytest.raises(B.BundleError, match="shift outside"):
        B.load_bundle(good)


def test_no_pickle_anywhere(good):
    # an object array would need pickle: the loader refuses it
    def edit(a):
        a["c1.bias"] = np.array([object()] * 8, dtype=object)

    with pytest.raises(ValueError):
        _rewrite(good, edit_arrays=edit)


def test_save_is_atomic_and_replaces(tmp_path):
    b1 = random_bundle(tmp_path / "m", "svpe", seed=1)
    b2 = random_bundle(tmp_path / "m", "svpe", seed=2)
    assert b1.sha256 != b2.sha256
    assert B.load_bundle(tmp_path / "m").sha256 == b2.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_npz_bytes_are_reproducible():
    a = {"x": np.arange(5, dtype=np.int16), "y": np.ones((2, 2), np.int64)}
    assert B.npz_bytes(a) == B.npz_bytes(dict(reversed(list(a.items()))))


@pytest.mark.parametrize("name", ["fmnist-svpe", "fmnist-vpe"])
def test_every_layer_holds_plus_and_minus_v(name):
    """Property over real bundles: each layer's acc_bits holds +V and -V (signed)."""
    from pynq_nbq import api

    spec = B.load_bundle(api.model_path(name)).spec
    weighted = [ly for ly in spec.layers if ly.weighted]
    assert weighted
    for ly in weighted:
        v, bits = ly.acc_bound, ly.acc_bits
        assert -(2 ** (bits - 1)) <= -v and v <= 2 ** (bits - 1) - 1, ly.name
        assert bits <= 48


def test_typed_manifest_is_parsed_once_and_frozen(tmp_path):
    import dataclasses

    from pynq_nbq import datapath as dp
    from pynq_nbq.testing import random_graph_bundle

    b = random_graph_bundle(tmp_path / "g", "svpe", 4, seed=1)
    spec = b.spec
    assert spec is not None and spec.pe is dp.PEKind.SVPE and spec.weight_bits == 4
    assert [ly.name for ly in spec.layers] == [d["name"] for d in b.layers]
    c3 = next(ly for ly in spec.layers if ly.name == "c3")
    assert (c3.kernel, c3.stride, c3.padding, c3.groups, c3.pool) == (3, 2, 1, 2, 0)
    assert c3.fan_in == 2 * 3 * 3 and c3.acc_bound == 18 * 2**15 * 2**6
    assert c3.in_shape == (4, 4, 3) and c3.out_shape == (4, 2, 2) and not c3.on_conv_engine
    assert spec.layers[0].on_conv_engine and spec.layers[0].pool == 2
    assert spec.input.mean == tuple(b.manifest["input"]["mean"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        c3.relu = False  # type: ignore[misc]
    assert B.load_bundle(tmp_path / "g").spec == spec  # same parse from disk


def test_saved_bundle_directory_follows_the_umask(tmp_path):
    """An exported bundle is readable by others where the umask allows (not mkdtemp's 0700)."""
    import os

    from pynq_nbq.api import model_path
    from pynq_nbq.bundle import load_bundle, save_bundle

    src = load_bundle(model_path("fmnist-svpe"))
    old = os.umask(0o022)
    try:
        save_bundle(src.manifest, src.arrays, tmp_path / "copy")
    finally:
        os.umask(old)
    assert (tmp_path / "copy").stat().st_mode & 0o777 == 0o755
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_load_bundle_reads_only_bounded_regular_files_inside_the_bundle(tmp_path, monkeypatch):
    """The CLI/API loader applies the server's file rules (issue 22): no FIFO (it would
    block), no symlink out of the bundle directory, declared array sizes checked before
    anything is decompressed."""
    import os

    from pynq_nbq import safe_files
    from pynq_nbq.api import model_path

    src = model_path("fmnist-svpe")
    fifo = tmp_path / "fifo"
    shutil.copytree(src, fifo)
    (fifo / "manifest.json").unlink()
    os.mkfifo(fifo / "manifest.json")
    with pytest.raises(B.BundleError, match="not a regular file"):
        B.load_bundle(fifo)

    outside = tmp_path / "outside"
    shutil.copytree(src, outside)
    link = tmp_path / "link"
    link.mkdir()
    (link / "manifest.json").symlink_to(outside / "manifest.json")
    (link / "arrays.npz").symlink_to(outside / "arrays.npz")
    with pytest.raises(B.BundleError, match="symlink out of the bundle directory"):
        B.load_bundle(link)

    monkeypatch.setattr(safe_files, "MAX_ARRAYS_BYTES", 1000)
    with pytest.raises(B.BundleError, match="declare .* bytes uncompressed"):
        B.load_bundle(src)
