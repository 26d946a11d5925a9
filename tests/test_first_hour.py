"""What a new user meets first says what it does: the serve hint suggests an image of the
model's own classes, a resized image is said to be resized, the csim backend names the
sources it builds from, what the docs tell a user to write is git-ignored."""

from __future__ import annotations

import json
import subprocess

import pytest
from PIL import Image

from pynq_nbq import api, cli
from pynq_nbq.backends import csim
from pynq_nbq.commands.serve import curl_hint
from pynq_nbq.testing import random_bundle

URL = "http://127.0.0.1:8000/"
DIGITS = [str(i) for i in range(10)]


def test_every_shipped_sample_is_of_the_default_models_classes():
    classes = api.load_model(backend="numpy").classes
    for path in api.sample_images():
        index = int(path.stem.split("-")[0])
        only = ["another class"] * len(classes)
        only[index] = classes[index]  # the sample matches by its own class alone
        assert api.sample_for(only) == path
    assert api.sample_for(classes) == api.sample_images()[0]


def test_serve_hint_for_the_default_model_curls_its_sample():
    model = api.load_model(backend="numpy")
    hint = curl_hint(model, URL)
    assert hint == f"try: curl -F image=@{api.sample_images()[0]} {URL}v1/classify"


def test_serve_hint_for_a_digits_model_suggests_no_t_shirt(tmp_path):
    random_bundle(tmp_path / "digits", size=8, classes=DIGITS)
    model = api.load_model(tmp_path / "digits", backend="numpy")
    hint = curl_hint(model, URL)
    assert api.sample_for(DIGITS) is None
    assert "t-shirt" not in hint.lower() and "samples/" not in hint
    assert "YOUR_IMAGE.png" in hint and "0, 1, 2" in hint and "8x8" in hint, hint


def test_classify_says_a_wrong_size_image_was_resized(tmp_path, capsys):
    random_bundle(tmp_path / "digits", size=8, classes=DIGITS)
    big = tmp_path / "big.png"
    Image.new("L", (28, 28), 200).save(big)
    small = tmp_path / "small.png"
    Image.new("L", (8, 8), 200).save(small)
    args = ["classify", "--backend", "numpy", "--model", str(tmp_path / "digits")]
    assert cli.main([*args, str(big), str(small)]) == 0
    err = capsys.readouterr().err
    assert err == f"note: {big}: a 28x28 image, resized (stretch) to the model's 8x8 input\n"
    assert cli.main([*args, "--json", str(big), str(small)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["results"][0]["resized_from"] == [28, 28]
    assert "resized_from" not in out["results"][1]


def test_csim_description_names_the_file_it_builds_from():
    desc = csim.CsimBackend().description
    assert f"{csim.hls_dir() / 'nbq_conv.cpp'} as a g++ C-simulation" in desc, desc


def test_what_the_docs_tell_a_user_to_write_is_ignored(tmp_path):
    root = api.SAMPLES_DIR.parent.parent
    paths = ["bench-out/report.json", "models/my-svpe/manifest.json"]
    proc = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths], cwd=root, capture_output=True, text=True
    )
    assert proc.stdout.split() == paths, proc
    shipped = "pynq_nbq/models/fmnist-svpe/manifest.json"
    proc = subprocess.run(["git", "check-ignore", "--no-index", shipped], cwd=root)
    assert proc.returncode == 1  # the embedded models stay tracked


def test_a_short_low_accuracy_training_run_says_to_train_longer(tmp_path, capsys):
    """A real 1-epoch digits run: its accuracy is low, and nbq train says why."""
    pytest.importorskip("torch")
    from pynq_nbq.commands.train import SHORT_RUN_EPOCHS, short_run_note

    args = ["train", "--dataset", "digits", "--epochs", "1", "--width", "0.25", "--quiet"]
    assert cli.main([*args, "--out", str(tmp_path / "run")]) == 0
    out, err = capsys.readouterr()
    acc = float(out.split("test accuracy ")[1].split("%")[0])
    assert acc < 80, out  # one epoch of digits is far from the 90% twenty reach
    assert f"note: {acc:.1f}% after 1 epoch says little" in err, err
    assert f"--epochs {SHORT_RUN_EPOCHS}" in err
    assert short_run_note(0.95, 2) is None and short_run_note(0.5, SHORT_RUN_EPOCHS) is None
    assert short_run_note(float("nan"), 1) is None
