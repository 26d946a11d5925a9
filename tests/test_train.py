"""Training loop: resume, the digits accuracy gate, CLI (host_train.train)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from host_train.data import DatasetMissing, load_digits, load_fashion_mnist, read_idx  # noqa: E402
from host_train.train import TrainConfig, load_checkpoint, train  # noqa: E402
from pynq_nbq.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_resume_continues_bit_identically(tmp_path, digits):
    cfg = dict(dataset="digits", width=0.25, epochs=3, batch_size=64, train_limit=512, seed=3)
    full = train(
        TrainConfig(**cfg), tmp_path / "full", progress=False, dataset=digits, log=lambda s: None
    )
    # the same run, interrupted after epoch 2, then resumed
    ck2 = _train_epochs(TrainConfig(**cfg), tmp_path / "cut", digits, stop_after=2)
    assert ck2["epoch"] == 2
    resumed = train(
        TrainConfig(**cfg),
        tmp_path / "cut",
        resume=True,
        progress=False,
        dataset=digits,
        log=lambda s: None,
    )
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert full["metrics"][-1]["test_acc"] == resumed["metrics"][-1]["test_acc"]
    assert resumed["epoch"] == 3


def _train_epochs(cfg, out, ds, stop_after):
    """Run ``cfg`` but kill it (by exception) after ``stop_after`` epochs."""

    class Stop(Exception):
        pass

    seen = []

    def log(s):
        seen.append(s)
        if len(seen) == stop_after:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, out, progress=False, dataset=ds, log=log)
    return load_checkpoint(out)


def test_resume_refuses_other_config(tmp_path, digits):
    cfg = TrainConfig(dataset="digits", width=0.25, epochs=1, train_limit=128)
    train(cfg, tmp_path, progress=False, dataset=digits, log=lambda s: None)
    with pytest.raises(ValueError, match="different configuration"):
        train(
            TrainConfig(dataset="digits", width=0.25, epochs=1, train_limit=128, lr=0.1),
            tmp_path,
            resume=True,
            progress=False,
            dataset=digits,
            log=lambda s: None,
        )


@pytest.mark.slow
def test_digits_rg_3bit_reaches_90_and_beats_round_to_nearest(tmp_path, digits):
    common = dict(
        dataset="digits", width=0.5, epochs=20, batch_size=64, lr=0.05, flip=False, seed=0
    )
    f = train(
        TrainConfig(method="float", **common),
        tmp_path / "float",
        progress=False,
        dataset=digits,
        log=lambda s: None,
    )
    rg = train(
        TrainConfig(method="rg", **common),
        tmp_path / "rg",
        progress=False,
        dataset=digits,
        log=lambda s: None,
    )
    rtn = train(
        TrainConfig(method="rtn", init=str(tmp_path / "float"), **common),
        tmp_path / "rtn",
        progress=False,
        dataset=digits,
        log=lambda s: None,
    )
    acc_f = f["metrics"][-1]["test_acc"]
    acc_rg = rg["metrics"][-1]["test_acc"]
    acc_rtn = rtn["metrics"][-1]["test_acc"]
    print(f"digits: float {acc_f:.4f} rg-3bit {acc_rg:.4f} rtn-3bit {acc_rtn:.4f}")
    assert acc_rg >= 0.90
    assert acc_rg > acc_rtn


def test_read_idx_roundtrip_and_errors(tmp_path):
    import gzip
    import struct

    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(p, "wb") as f:
        f.write(b"\0\0\x08\x03" + struct.pack(">3I", 2, 3, 4) + arr.tobytes())
    assert np.array_equal(read_idx(p), arr)
    bad = tmp_path / "bad"
    bad.write_bytes(b"nope")
    with pytest.raises(ValueError, match="idx"):
        read_idx(bad)


def test_cifar10_binary_files_load(tmp_path):
    from host_train.data import load_dataset

    rng = np.random.default_rng(0)

    def batch(n):
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        return np.concatenate([labels[:, None], pixels], axis=1), labels, pixels

    recs, labels, pixels = batch(6)
    for i in (1, 2):
        (tmp_path / f"data_batch_{i}.bin").write_bytes(recs[(i - 1) * 3 : i * 3].tobytes())
    test_recs, _, _ = batch(2)
    (tmp_path / "test_batch.bin").write_bytes(test_recs.tobytes())
    ds = load_dataset("cifar10", str(tmp_path))
    assert ds.train_x.shape == (6, 3, 32, 32) and ds.test_x.shape == (2, 3, 32, 32)
    assert ds.train_y.tolist() == labels.tolist()
    assert np.array_equal(ds.train_x[0].ravel(), pixels[0])
    with pytest.raises(DatasetMissing, match="test_batch.bin"):
        load_dataset("cifar10", str(tmp_path / "nothing"))


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetMissing, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(str(tmp_path))


def test_cli_train_and_eval(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--out",
            str(out),
            "--dataset",
            "digits",
            "--width",
            "0.25",
            "--epochs",
            "1",
            "--train-limit",
            "256",
            "--quiet",
        ]
    )
    assert rc == 0
    assert (out / "metrics.json").exists() and (out / "curves.png").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics[0]["epoch"] == 1
    rc = main(["eval", str(out), "--out", str(tmp_path / "ev")])
    assert rc == 0
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert 0.0 <= ev["quantized_accuracy"] <= 1.0
    assert np.array(ev["confusion_matrix"]).sum() == 450
    assert (tmp_path / "ev" / "confusion.png").exists()
    assert (tmp_path / "ev" / "weight_levels.png").exists()


def test_cli_reports_bad_arguments(tmp_path, capsys):
    rc = main(["train", "--out", str(tmp_path), "--dataset", "digits", "--method", "bogus"])
    assert rc == 2
    assert "unknown method" in capsys.readouterr().err
    rc = main(["train", "--out", str(tmp_path), "--dataset", "digits", "--method", "rtn"])
    assert rc == 2
    rc = main(["eval", str(tmp_path / "nothing")])
    assert rc == 2
