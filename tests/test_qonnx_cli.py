"""``nbq export BUNDLE --format qonnx`` and ``nbq import``: the round trip from the shell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from pynq_nbq.bundle import load_bundle  # noqa: E402
from pynq_nbq.cli import main  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "pynq_nbq" / "models"


def test_export_then_import_from_the_command_line(tmp_path, capsys):
    src = MODELS / "fmnist-vpe"
    assert main(["export", str(src), "--format", "qonnx", "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m.onnx").is_file()
    assert main(["import", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "back")]) == 0
    a, b = load_bundle(src), load_bundle(tmp_path / "back")
    assert a.manifest == b.manifest
    assert all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
    assert "wrote" in capsys.readouterr().out


def test_import_overrides_and_refusals(tmp_path, capsys):
    src = MODELS / "fmnist-svpe"
    out = tmp_path / "m.onnx"
    assert main(["export", str(src), "--format", "qonnx", "--requant", "fused",
                 "--out", str(out)]) == 0  # fmt: skip
    m = onnx.load(str(out))
    del m.metadata_props[:]  # a foreign graph: nothing but the graph itself
    onnx.save(m, str(out))
    classes = ",".join(f"c{i}" for i in range(10))
    args = ["import", str(out), "--out", str(tmp_path / "b"), "--classes", classes,
            "--mean", "0.25", "--std", "0.5", "--name", "foreign"]  # fmt: skip
    assert main(args) == 0
    b = load_bundle(tmp_path / "b")
    assert b.classes[3] == "c3" and b.manifest["name"] == "foreign"
    assert b.manifest["input"]["mean"] == [0.25] and b.manifest["input"]["mode"] == "L"
    node = next(n for n in m.graph.node if n.op_type == "Relu")
    node.op_type = "Tanh"
    onnx.save(m, str(out))
    assert main(["import", str(out), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert f"node {node.name} (Tanh)" in err and not (tmp_path / "c").exists()
