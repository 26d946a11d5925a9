"""The package's errors share one base class, which the CLI reports in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pynq_nbq import cli
from pynq_nbq.backends.csim import CsimError
from pynq_nbq.bundle import BundleError
from pynq_nbq.errors import NbqError
from pynq_nbq.kernel.protocol import KernelError
from pynq_nbq.preprocess import ImageError, ImageTooLarge


@pytest.mark.parametrize("cls", [BundleError, KernelError, CsimError, ImageError, ImageTooLarge])
def test_every_package_error_is_an_nbq_error(cls):
    assert issubclass(cls, NbqError)
    assert not issubclass(cls, ValueError)  # caught as NbqError, not as a builtin


def test_export_error_is_an_nbq_error():
    pytest.importorskip("torch")
    from host_train.export import ExportError
    from host_train.train import CheckpointError

    for cls in (ExportError, CheckpointError):
        assert issubclass(cls, NbqError) and not issubclass(cls, ValueError)


def test_cli_reports_a_bad_bundle_in_one_line(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text("{not json")
    (tmp_path / "arrays.npz").write_bytes(b"")
    rc = cli.main(["info", "--model", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.count("\n") == 0 and "bad JSON" in err


def _bad_images(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    png = Path(cli.__file__).parent / "samples" / "1-trouser.png"
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(png.read_bytes()[:100])
    return {
        str(tmp_path / "missing.png"): "no such image file",
        str(text): "not an image",
        str(truncated): "truncated",
        str(tmp_path): "a directory, not an image file",
    }


def test_cli_classify_reports_bad_images_in_one_line_naming_the_path_once(tmp_path, capsys):
    for path, why in _bad_images(tmp_path).items():
        rc = cli.main(["classify", "--backend", "numpy", path])
        err = capsys.readouterr().err.strip()
        assert rc == 2, err
        assert err.count("\n") == 0 and why in err, err
        assert err.count(path) == 1, err
        assert "Traceback" not in err


def test_cli_classify_refuses_a_top_below_one(capsys):
    assert cli.main(["classify", "--backend", "numpy", "--top", "0"]) == 2
    assert "--top must be >= 1, got 0" in capsys.readouterr().err
