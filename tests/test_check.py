"""``nbq check``: a backend against numpy on Fashion-MNIST, one JSON schema."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pynq_nbq.backends.numpy_backend import NumpyBackend
from pynq_nbq.bench.check import CHECKED, SCHEMA, check_backend, check_model
from pynq_nbq.cli import main
from pynq_nbq.idx import FASHION_DIR

needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "t10k-labels-idx1-ubyte.gz").exists()
    and not (FASHION_DIR / "t10k-labels-idx1-ubyte").exists(),
    reason="needs Fashion-MNIST (Debian: dataset-fashion-mnist)",
)


class _OffByOne(NumpyBackend):
    """numpy, but every conv-engine output one LSB higher where it can be."""

    name = "off-by-one"

    def run_conv(self, x, spec):
        y = super().run_conv(x, spec)
        return np.minimum(y.astype(np.int32) + 1, 32767).astype(y.dtype)


def test_checked_backends_come_from_the_registry():
    assert CHECKED == ("native", "csim", "fpga")


@needs_fashion
def test_native_report_schema_and_equality(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["check", "--backend", "native", "--images", "12", "--batch", "5",
               "--models", "fmnist-svpe", "--json", str(out)])  # fmt: skip
    assert rc == 0
    assert "0 of 12 images differ from numpy" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["schema"] == SCHEMA and report["all_logits_equal"] is True
    (r,) = report["results"]
    assert r["images_count"] == 12 and r["images_with_different_logits_count"] == 0
    assert r["backend_accuracy_top1_fraction"] == r["numpy_accuracy_top1_fraction"]


@needs_fashion
def test_a_backend_that_differs_is_counted():
    r = check_model("fmnist-svpe", _OffByOne(), images=6, batch=4, data_dir=FASHION_DIR)
    assert r["images_with_different_logits_count"] == 6


def test_bad_input_is_one_line(capsys):
    assert main(["check", "--backend", "native", "--define", "NBQ_X=1"]) == 2
    assert "--define applies to --backend csim only" in capsys.readouterr().err
    assert main(["check", "--backend", "csim", "--define", "X=1"]) == 2
    assert "expected NBQ_NAME=INTEGER" in capsys.readouterr().err
    with pytest.raises(ValueError, match="backend must be one of"):
        check_backend("numpy")
