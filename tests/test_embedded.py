"""The embedded default models: shipped, reproducible from their checkpoints, accurate,
and in agreement with the torch fake-quant model they came from."""

from pathlib import Path

import numpy as np
import pytest

from host_train.data import FASHION_CLASSES
from pynq_nbq import api
from pynq_nbq.bundle import load_bundle
from pynq_nbq.cli import main

ROOT = Path(__file__).resolve().parent.parent
FASHION = FASHION_CLASSES


@pytest.mark.parametrize("name,datapath", [("fmnist-svpe", "svpe"), ("fmnist-vpe", "vpe")])
def test_embedded_bundles_are_shipped_and_valid(name, datapath):
    assert name in api.embedded_models()
    b = load_bundle(api.model_path(name))
    assert b.datapath == datapath and b.classes == FASHION
    assert b.weight_bits == (3 if datapath == "svpe" else 16)
    assert len(api.sample_images()) == 10


def test_default_model_is_the_3bit_svpe():
    assert api.load_model().bundle.manifest["name"] == "fmnist-svpe"


@pytest.mark.parametrize("name", ["fmnist-svpe", "fmnist-vpe"])
def test_samples_are_classified(name):
    model = api.load_model(name)
    paths = api.sample_images()
    pred = model.classify([str(p) for p in paths])
    truth = [int(p.name.split("-")[0]) for p in paths]
    assert int((pred.indices == np.array(truth)).sum()) >= 8


def test_cli_classify_defaults_to_samples(capsys):
    assert main(["classify"]) == 0
    out = capsys.readouterr().out
    assert out.count(" ms ") == 10 and "fmnist-svpe" in out


torch = pytest.importorskip("torch")


def test_reexport_reproduces_shipped_checksums(tmp_path):
    """A datapath change must re-export on purpose (scripts/make_embedded.py), not drift."""
    from host_train.export import export
    from scripts.make_embedded import CKPTS, EMBEDDED

    for name, datapath, stem in EMBEDDED:
        fresh, _ = export(
            str(CKPTS / f"{stem}.npz"),
            str(tmp_path / name),
            datapath,
            name=name,
            log=lambda s: None,
        )
        shipped = load_bundle(api.model_path(name))
        assert fresh.sha256 == shipped.sha256, f"{name}: re-export differs from the shipped one"
        assert fresh.manifest["tensors"] == shipped.manifest["tensors"]
        assert fresh.manifest["layers"] == shipped.manifest["layers"]  # acc_bits included
        assert fresh.manifest["schema_version"] == shipped.manifest["schema_version"]


def test_samples_regenerate(tmp_path, monkeypatch):
    from PIL import Image

    import scripts.make_embedded as me

    monkeypatch.setattr(me, "SAMPLES", tmp_path)
    me.write_samples()
    for p in api.sample_images():
        a = np.asarray(Image.open(p))
        b = np.asarray(Image.open(tmp_path / p.name))
        assert np.array_equal(a, b), p.name


@pytest.mark.parametrize(
    "name,stem", [("fmnist-svpe", "fmnist-rg3"), ("fmnist-vpe", "fmnist-float")]
)
def test_engine_agrees_with_torch_on_a_fixed_subset(name, stem):
    """CI-sized version of scripts/check_agreement.py (first 1,000 test images)."""
    from host_train.agreement import agreement
    from scripts.make_embedded import CKPTS

    r = agreement(str(CKPTS / f"{stem}.npz"), str(api.model_path(name)), limit=1000)
    assert r["top1_agreement"] >= 0.99, r
    assert abs(r["engine_accuracy"] - r["torch_accuracy"]) <= 0.005, r
    assert r["engine_accuracy"] >= 0.9, r
