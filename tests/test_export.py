"""Export: fx fusion of every op, both datapaths, engine vs torch agreement."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from host_train.agreement import agreement  # noqa: E402
from host_train.data import load_digits  # noqa: E402
from host_train.export import ExportError, export  # noqa: E402
from host_train.train import TrainConfig, load_checkpoint, save_portable, train  # noqa: E402
from pynq_nbq.api import load_model  # noqa: E402
from pynq_nbq.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    ds = load_digits()
    common = dict(dataset="digits", epochs=3, batch_size=64, flip=False)
    out = {}
    for name, kw in {
        "resnet-rg": dict(model="tiny-resnet", method="rg"),
        "resnet-float": dict(model="tiny-resnet", method="float"),
        "compact-rg5": dict(model="nbq-compact", width=0.25, method="rg", bits=5),
    }.items():
        train(TrainConfig(**common, **kw), d / name, progress=False, dataset=ds, log=lambda s: None)
        out[name] = d / name
    return d, out


@pytest.mark.parametrize(
    "run,datapath",
    [("resnet-rg", "svpe"), ("resnet-rg", "vpe"), ("resnet-float", "vpe"), ("compact-rg5", "svpe")],
)
def test_export_agrees_with_torch(runs, run, datapath):
    d, r = runs
    out = d / f"{run}-{datapath}"
    bundle, report = export(
        str(r[run]), str(out), datapath, calib_images=256, report_images=128, log=lambda s: None
    )
    assert report["top1_agreement"] >= 0.97
    for row in report["layers"]:
        assert row["sqnr_db"] > 30, row
    res = agreement(str(r[run]), str(out))
    assert res["top1_agreement"] >= 0.97, res
    assert abs(res["torch_accuracy"] - res["engine_accuracy"]) <= 0.02


def test_every_op_is_exported_and_placed(runs):
    d, r = runs
    export(
        str(r["resnet-rg"]),
        str(d / "ops"),
        "svpe",
        calib_images=64,
        report_images=32,
        log=lambda s: None,
    )
    m = load_model(d / "ops")
    ops = {op for _, op, _ in m.engine.placements}
    assert ops == {"conv", "add", "maxpool", "concat", "gap", "linear"}
    where = {name: p for name, _, p in m.engine.placements}
    layers = {ly["name"]: ly for ly in m.bundle.layers}
    for name, p in where.items():
        ly = layers[name]
        hw = ly["op"] == "conv" and ly["stride"] == 1 and ly["kernel"] in (1, 3)
        assert p == ("conv-engine" if hw else "arm"), name
    assert where["down.0.0"] == "arm"  # stride 2


def test_portable_checkpoint_exports_identically(runs):
    d, r = runs
    ck = load_checkpoint(r["resnet-rg"])
    save_portable(ck, d / "portable")
    a, _ = export(
        str(r["resnet-rg"]),
        str(d / "a"),
        "svpe",
        calib_images=64,
        report_images=16,
        log=lambda s: None,
    )
    b, _ = export(
        str(d / "portable.npz"),
        str(d / "b"),
        "svpe",
        calib_images=64,
        report_images=16,
        log=lambda s: None,
    )
    assert a.sha256 == b.sha256


def test_svpe_needs_power_of_two_checkpoint(runs, tmp_path):
    _, r = runs
    with pytest.raises(ExportError, match="power-of-two checkpoint"):
        export(str(r["resnet-float"]), str(tmp_path / "x"), "svpe", log=lambda s: None)
    assert not (tmp_path / "x").exists()


def test_unsupported_op_is_refused(tmp_path):
    from host_train.export import _Tracer, fuse_graph
    from host_train.layers import convert

    class Sig(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 2, 3, bias=False)
            self.bn = nn.BatchNorm2d(2)

        def forward(self, x):
            return torch.sigmoid(self.bn(self.c(x)))

    m = convert(Sig())
    gm = torch.fx.GraphModule(m, _Tracer().trace(m))
    with pytest.raises(ExportError, match="sigmoid"):
        fuse_graph(gm)


def test_cli_export_info_classify(runs, tmp_path, capsys):
    _, r = runs
    out = tmp_path / "b"
    assert (
        main(
            [
                "export",
                str(r["compact-rg5"]),
                "--out",
                str(out),
                "--calib-images",
                "64",
                "--report-images",
                "16",
            ]
        )
        == 0
    )
    assert (out / "export_report.json").exists()
    assert "wrote" in capsys.readouterr().out
    assert main(["info", "--model", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["datapath"] == "svpe" and info["weight_bits"] == 5
    from PIL import Image

    img = tmp_path / "x.png"
    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8)).save(img)
    assert main(["classify", str(img), "--model", str(out), "--json", "--top", "3"]) == 0
    res = json.loads(capsys.readouterr().out)["results"][0]
    assert res["label"] in [str(i) for i in range(10)] and len(res["top"]) == 3
    assert main(["classify", str(tmp_path / "missing.png"), "--model", str(out)]) == 2
